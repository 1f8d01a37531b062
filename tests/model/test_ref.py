"""How commands and settings name a registered model."""

from __future__ import annotations

import pytest

from model.ref import CHAMPION, ModelRef, parse_ref


def test_a_setting_s_version_number_or_alias_becomes_the_same_reference_a_command_would_parse() -> None:
    assert ModelRef.of("loan-ews-pd-12m", "3") == ModelRef("loan-ews-pd-12m", version="3")
    assert ModelRef.of("loan-ews-pd-12m", "champion") == ModelRef("loan-ews-pd-12m", alias=CHAMPION)
    for ref in ("3", "champion", "challenger"):
        r = ModelRef.of("loan-ews-pd-12m", ref)
        assert parse_ref(str(r)) == r and r.ref == ref


def test_a_malformed_reference_names_the_form_expected() -> None:
    assert parse_ref("m") == ModelRef("m", alias=CHAMPION)
    assert parse_ref("m", default_alias=None) == ModelRef("m")
    for bad in ("m@", "m:x", "m@1a b", "-m", ""):
        with pytest.raises(ValueError, match="is not NAME, NAME@alias or NAME:version"):
            parse_ref(bad)
    with pytest.raises(ValueError, match="is not NAME"):
        parse_ref(str(ModelRef.of("m", "bad ref")))  # a malformed EWS_MODEL_REF is refused the same way
