"""NOLA as a PEFT method: ``from nola.peft import NolaConfig`` and PEFT's own functions do the rest.

Importing this package registers the method ``"nola"`` with PEFT (:func:`register`), so that
``get_peft_model(base, NolaConfig(...))``, ``PeftModel.from_pretrained(base, folder)``,
``PeftConfig.from_pretrained`` and the ``transformers`` ``Trainer`` know it. Written against
PEFT 0.21.2 (pinned in requirements.lock); ``tests/test_peft.py`` fails loudly if a new PEFT breaks the
registration.
"""
from __future__ import annotations

import enum

import peft
from peft.utils import PeftType, register_peft_method

from nola.peft.config import NolaConfig
from nola.peft.layer import Linear, NolaLayer, NolaRole
from nola.peft.model import NolaModel

__all__ = ["NolaConfig", "NolaModel", "NolaLayer", "NolaRole", "Linear", "register", "PEFT_VERSION"]

PEFT_VERSION = "0.21.2"  # the PEFT this package is written and tested against


def add_peft_type(name: str) -> PeftType:
    """Add ``name`` (upper case) to PEFT's ``PeftType`` and return the member.

    ``register_peft_method`` accepts only a name whose upper case is already a ``PeftType`` member,
    and ``PeftType`` is a closed ``str`` Enum (Python offers no call to add a member). This builds
    the member as ``enum`` itself does for a ``str`` mix-in — a ``str`` instance of the class with
    ``_name_`` and ``_value_`` — and enters it in the three tables lookups read: the attribute
    (``PeftType.NOLA``), the name map (``PeftType["NOLA"]``, iteration) and the value map
    (``PeftType("NOLA")``, what a saved ``adapter_config.json`` is parsed with). The one place that
    touches PEFT's internals; a PEFT that changes ``PeftType`` fails here, with this name."""
    if name in PeftType.__members__:
        return PeftType[name]
    if not (isinstance(PeftType, enum.EnumMeta) and issubclass(PeftType, str)):
        raise RuntimeError(f"peft {peft.__version__}: PeftType is no longer a str Enum; nola.peft is written "
                           f"for peft=={PEFT_VERSION}")
    member = str.__new__(PeftType, name)
    member._name_, member._value_ = name, name
    member.__objclass__ = PeftType
    setattr(PeftType, name, member)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    return member


def register() -> None:
    """Make ``"nola"`` a PEFT method (once per process): the ``PeftType`` member, then PEFT's own
    ``register_peft_method`` for the config, tuner and state-dict prefix."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = add_peft_type("NOLA")
    if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        register_peft_method(name="nola", config_cls=NolaConfig, model_cls=NolaModel, prefix=NolaModel.prefix)


register()
