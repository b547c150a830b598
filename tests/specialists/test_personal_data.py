import pytest

from moderation_worker.specialists.personal_data import (
    CARD,
    EMAIL,
    IBAN,
    PHONE,
    find_personal_data,
    iban_valid,
    luhn_valid,
    mask,
)


@pytest.mark.parametrize(
    ("number", "valid"),
    [("4111111111111111", True), ("4111111111111112", False), ("5500005555555559", True),
     ("378282246310005", True), ("378282246310006", False), ("79927398713", True)],
)  # fmt: skip
def test_luhn(number, valid):
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [("GB82 WEST 1234 5698 7654 32", True), ("GB82 WEST 1234 5698 7654 33", False),
     ("DE89370400440532013000", True), ("DE8937040044053201300", False),
     ("FR1420041010050500013M02606", True)],
)  # fmt: skip
def test_iban_mod_97_and_length(iban, valid):
    assert iban_valid(iban) is valid


def test_each_kind_is_found_and_only_its_masked_form_is_shown():
    text = (
        "Pay with 4111 1111 1111 1111 or to GB82 WEST 1234 5698 7654 32.\n"
        "Questions: jane.doe@example.com or +44 20 7946 0958."
    )
    findings = find_personal_data(text)
    assert [f.kind for f in findings] == [CARD, IBAN, EMAIL, PHONE]
    masked = mask(text, findings)
    for secret in ("4111 1111 1111 1111", "1111 1111 1111", "WEST 1234 5698", "jane.doe", "7946 0958"):
        assert secret not in masked
    assert "**** **** **** 1111" in masked and "GB82 **** 5432" in masked and "j***@example.com" in masked


def test_a_near_miss_and_ordinary_numbers_are_not_personal_data():
    text = "Card 4111 1111 1111 1112, order 2024-11-30, total 1,299.00, SKU 55501234, 15:30"
    assert find_personal_data(text) == []
    assert mask(text) == text


def test_a_card_number_is_not_also_a_phone_number():
    (finding,) = find_personal_data("+4111111111111111")
    assert finding.kind == CARD
