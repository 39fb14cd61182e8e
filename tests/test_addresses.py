import hashlib

import pytest

from monitor.domain.addresses import InvalidAddress, canonical_address, is_address, to_checksum
from monitor.domain.keccak import keccak256

# The test vectors published in EIP-55 itself.
EIP55_VECTORS = [
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    "0xde709f2102306220921060314715629080e2fb77",
    "0x27b1fdb04752bbc536007a920d24acb045561c26",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
        # 200 bytes spans two 136-byte blocks of the sponge.
        (b"\xa3" * 200, "3a57666b048777f2c953dc4456f45a2588e1cb6f2da760122d530ac2ce607d4a"),
    ],
)
def test_keccak256_matches_known_digests(data: bytes, digest: str) -> None:
    assert keccak256(data).hex() == digest


def test_keccak256_is_not_nist_sha3() -> None:
    assert keccak256(b"abc") != hashlib.sha3_256(b"abc").digest()


@pytest.mark.parametrize("address", EIP55_VECTORS)
def test_checksum_reproduces_eip55_vectors(address: str) -> None:
    assert to_checksum(address.lower()) == address
    assert to_checksum(address.upper().replace("0X", "0x")) == address


@pytest.mark.parametrize("address", EIP55_VECTORS)
def test_canonical_address_accepts_valid_checksums_and_lowercases(address: str) -> None:
    assert canonical_address(address) == address.lower()


def test_canonical_address_accepts_single_case_without_checksum() -> None:
    lower = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    assert canonical_address(lower) == lower
    assert canonical_address("0x" + lower[2:].upper()) == lower


def test_canonical_address_rejects_a_wrong_checksum_and_suggests_the_right_one() -> None:
    wrong = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"  # last letter's case flipped
    with pytest.raises(InvalidAddress, match="bad EIP-55 checksum") as info:
        canonical_address(wrong)
    assert "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1bea",  # too short
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed00",  # too long
        "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed00",  # no prefix
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg",  # not hex
        " 0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "",
    ],
)
def test_canonical_address_rejects_malformed_text(text: str) -> None:
    with pytest.raises(InvalidAddress, match="not a valid address"):
        canonical_address(text)
    assert not is_address(text)


def test_canonical_address_rejects_non_strings() -> None:
    with pytest.raises(InvalidAddress, match="got int"):
        canonical_address(0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED)
