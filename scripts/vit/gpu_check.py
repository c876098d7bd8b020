"""Checks of the ViT code that need timm and torchvision (a GPU machine with requirements-vit.txt):

1. the toy ViT's state dict loads into timm's ``VisionTransformer`` of the same sizes (strict) and
   both compute the same logits;
2. timm's ``vit_base/large_patch16_224`` have the projections the role table names, with the
   shapes the parameter table assumes (built without weights), and the pre-trained tag timm resolves;
3. the evaluation transform equals torchvision's Resize(8/7 size) + CenterCrop + ToTensor + Normalize;
4. the official augmentation runs and is reproducible under the per-image seed.

    python scripts/vit/gpu_check.py      (prints one line per check; exit 1 on the first failure)
"""
from __future__ import annotations

import numpy as np
import timm
import torch
from PIL import Image
from torchvision import transforms as T

from nola.adapters import find_targets
from nola.vit.model import TARGETS, TIMM_NAMES, TOY, ToyViT
from nola.vit.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, official_augmentation, seeded


def main() -> None:
    toy = ToyViT(**TOY, num_classes=7).eval()
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=TOY["img_size"], patch_size=TOY["patch_size"], embed_dim=TOY["embed_dim"], depth=TOY["depth"],
        num_heads=TOY["num_heads"], mlp_ratio=TOY["mlp_ratio"], num_classes=7).eval()
    ref.load_state_dict(toy.state_dict(), strict=True)
    x = torch.randn(4, 3, TOY["img_size"], TOY["img_size"])
    with torch.no_grad():
        torch.testing.assert_close(toy(x), ref(x), rtol=1e-5, atol=1e-5)
    print("ok: toy ViT = timm VisionTransformer (strict state dict, same logits)")

    for arch, name in TIMM_NAMES.items():
        model = timm.create_model(name, pretrained=False)
        roles = find_targets(model, [*TARGETS["lora"], *TARGETS["nola_mlp"]])
        shapes = {role: (len(m), m[0][2], m[0][3]) for role, m in roles.items()}
        print(f"ok: {arch}: {name} -> default tag {model.pretrained_cfg.get('tag')}; roles {shapes}")

    rng = np.random.default_rng(0)
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for height, width in ((300, 400), (500, 333), (256, 256), (224, 301), (97, 1000)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        assert torch.equal(EvalTransform(224)(image), reference(image)), (height, width)
    print("ok: evaluation transform = torchvision's, bit for bit")

    augment = official_augmentation(224)
    image = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    with seeded(123):
        first = augment(image)
    with seeded(123):
        again = augment(image)
    assert first.shape == (3, 224, 224) and torch.equal(first, again)
    print("ok: official augmentation runs and repeats under the same per-image seed")


if __name__ == "__main__":
    main()
