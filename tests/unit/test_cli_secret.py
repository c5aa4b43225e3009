"""The ``%^%#...%^%#`` cipher form of pre-shared keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikegate.cli.params import Secret
from ikegate.policy import secret


@pytest.fixture
def key_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "psk.key"
    path.write_bytes(b"installation-specific bytes")
    yield path
    secret.configure_key_file(None)


def test_cipher_form_shape_and_round_trip() -> None:
    text = secret.encrypt_secret("Huawei@123")
    assert secret.is_cipher(text)
    assert text.startswith("%^%#") and text.endswith("%^%#")
    assert "Huawei@123" not in text
    assert " " not in text and "?" not in text
    assert secret.decrypt_secret(text) == "Huawei@123"


def test_decrypt_accepts_the_clear_form() -> None:
    assert secret.decrypt_secret("plain") == "plain"
    assert not secret.is_cipher("plain")
    assert not secret.is_cipher("%^%#%^%#")


def test_same_key_same_cipher_text() -> None:
    # deliberate: load -> display -> load must give identical text
    assert secret.encrypt_secret("k") == secret.encrypt_secret("k")
    assert secret.encrypt_secret("k") != secret.encrypt_secret("K")


def test_tampered_cipher_text_is_refused() -> None:
    text = secret.encrypt_secret("abc")
    body = text[4:-4]
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    with pytest.raises(ValueError):
        secret.decrypt_secret(f"%^%#{flipped}%^%#")
    with pytest.raises(ValueError):
        secret.decrypt_secret("%^%#short%^%#")


def test_key_file_changes_the_key(key_file: Path) -> None:
    before = secret.encrypt_secret("abc")
    secret.configure_key_file(key_file)
    after = secret.encrypt_secret("abc")
    assert after != before
    assert secret.decrypt_secret(after) == "abc"
    with pytest.raises(ValueError):
        secret.decrypt_secret(before)


def test_longest_clear_key_fits_the_cipher_length() -> None:
    text = secret.encrypt_secret("k" * 127)
    assert len(text) <= secret.MAX_CIPHER_LENGTH
    assert Secret("psk").parse(text) == "k" * 127


@given(
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?"), min_size=1, max_size=127
    )
)
def test_any_typable_key_round_trips(clear: str) -> None:
    if secret.is_cipher(clear):
        return
    assert secret.decrypt_secret(secret.encrypt_secret(clear)) == clear
