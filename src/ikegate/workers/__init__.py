"""Worker processes: one gateway per placement, each owning its SAs, with the kernel steering datagrams.

Only the steering building block lives here so far (``steering``): SPIs that encode their owner and the classic
BPF program that reads them back out of each datagram.
"""
