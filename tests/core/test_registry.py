import pytest

from rlaif_code.core.registry import Registry, RegistryError


def test_lookup_and_listing():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)

    @reg.register("b")
    def b():
        return 2

    assert reg.get("a") == 1 and reg.get("b")() == 2 and reg.names() == ["a", "b"] and "a" in reg


def test_unknown_name_fails_loudly_with_known_names():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(RegistryError, match=r"unknown widget 'z' \(known: a\)"):
        reg.get("z")


def test_duplicate_registration_fails():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", 2)
