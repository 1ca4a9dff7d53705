from tower.runner.masking import MASK, SecretMasker


def test_every_occurrence_of_a_secret_value_is_masked() -> None:
    mask = SecretMasker(["hunter22", "s3cr3t-token"])
    assert mask("pw=hunter22 again hunter22") == f"pw={MASK} again {MASK}"
    assert mask("Bearer s3cr3t-token!") == f"Bearer {MASK}!"


def test_values_shorter_than_four_characters_are_left_alone() -> None:
    mask = SecretMasker(["abc", "1", ""])
    assert not mask
    assert mask("abc 1 abcd") == "abc 1 abcd"


def test_a_secret_containing_another_is_masked_whole() -> None:
    mask = SecretMasker(["pass", "password123"])
    assert mask("password123 / pass") == f"{MASK} / {MASK}"


def test_regex_characters_in_values_are_literal() -> None:
    mask = SecretMasker(["a.b*c(d)"])
    assert mask("a.b*c(d) axbbbcd") == f"{MASK} axbbbcd"


def test_multi_line_values_are_masked_line_by_line() -> None:
    key = "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----"
    mask = SecretMasker([key])
    assert mask("MIIBOgIBAAJBAK") == MASK
    assert mask(key) == MASK
