"""``NolaConfig``: the PEFT configuration of a NOLA adapter (what ``adapter_config.json`` holds)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig
from peft.utils import PeftType

from nola.config import BASIS_DTYPES, MODES, NOLAConfig
from nola.errors import fail


@dataclass
class NolaConfig(PeftConfig):
    """NOLA (Koohpayegani et al., ICLR 2024): ΔW = s·A·B with A = Σᵢ αᵢAᵢ, B = Σⱼ βⱼBⱼ, s = c / r.

    The bases Aᵢ (d_in × r) and Bⱼ (r × d_out) are uniform random matrices regenerated from ``seed``
    (never saved); α and β (``num_basis`` numbers each per adapted layer) are all that trains and
    all that ``save_pretrained`` writes — as ``qbits``-bit codes with qNOLA. Every layer of one role
    (the adapted modules that share a name and a shape, e.g. all ``q_proj``) shares one basis pair
    unless ``seed_per_layer``, and all its layers are mixed in one product per forward pass.

    The fields mean what :class:`nola.config.NOLAConfig`'s do (``r`` is its ``rank``); an adapter made
    here computes the same numbers as ``nola.inject`` with the same seed and coefficients.
    """

    r: int = field(default=8, metadata={"help": "rank of A and B"})
    num_basis: int = field(default=1024, metadata={"help": "k = l, random basis matrices per factor"})
    c: float = field(default=1.0, metadata={"help": "scale numerator: s = c / r"})
    seed: int = field(default=0, metadata={"help": "the seed all bases derive from (saved; the bases are not)"})
    seed_per_layer: bool = field(default=False, metadata={"help": "a basis per layer instead of one per role"})
    qbits: Optional[int] = field(default=None, metadata={
        "help": "qNOLA: bits per coefficient (2..8); training sees the quantised values (straight through) "
                "and save_pretrained writes the packed codes"})
    mode: str = field(default="materialised", metadata={
        "help": f"basis execution, one of {MODES}: kept in memory, or regenerated in chunks (no memory)"})
    basis_dtype: str = field(default="float32", metadata={"help": f"dtype of kept bases, one of {BASIS_DTYPES}"})
    chunk_rows: int = field(default=128, metadata={"help": "basis rows generated at a time in onthefly mode"})
    target_modules: Optional[Union[list[str], str]] = field(default=None, metadata={
        "help": "module names (or a regex) to adapt, e.g. ['q_proj', 'v_proj']: nn.Linear, and GPT-2's Conv1D "
                "(its weight layout is read from the module, no fan_in_fan_out needed)"})
    bias: str = field(default="none", metadata={"help": "'none': NOLA trains no bias"})
    modules_to_save: Optional[list[str]] = field(default=None, metadata={
        "help": "modules besides the NOLA layers to train and save (e.g. a new classifier head)"})
    layers_to_transform: Optional[Union[list[int], int]] = field(default=None, metadata={
        "help": "only these layer indices (with layers_pattern)"})
    layers_pattern: Optional[Union[list[str], str]] = field(default=None, metadata={
        "help": "the name of the layer list, for layers_to_transform"})
    base_model_identity: Optional[dict] = field(default=None, metadata={
        "help": "recorded when the adapter is made: the base's class and SHA-256 of its configuration; "
                "loading onto another base is refused"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftType.NOLA
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if self.bias != "none":
            fail(f"NolaConfig(bias={self.bias!r}): NOLA trains no bias; use bias='none'")
        if self.layers_pattern and self.layers_to_transform is None:
            fail("NolaConfig: layers_pattern needs layers_to_transform")
        try:
            self.to_nola()  # the native config holds the one check of every value
        except ValueError as exc:
            fail(f"NolaConfig: {exc} (flag names are nola's command-line spellings of these fields)")

    def to_nola(self) -> NOLAConfig:
        """The native configuration of the same maths (seed, rank, scale, quantisation, basis mode)."""
        return NOLAConfig(rank=self.r, num_basis=self.num_basis, c=self.c, seed=self.seed,
                          seed_per_layer=self.seed_per_layer, qbits=self.qbits, mode=self.mode,
                          basis_dtype=self.basis_dtype, chunk_rows=self.chunk_rows)
