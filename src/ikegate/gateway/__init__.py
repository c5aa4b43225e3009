"""The controller: SA database owner, policy decisions after every create/delete, placement."""
