"""Sanity check of the EfficientNet-Lite towers on real photos: our timm trunk vs the reference
implementation (efficientnet-lite-pytorch), and the ImageNet top-1 class of a few Flickr8k dog photos.

    CAPSEARCH_ARTIFACTS=artifacts python scripts/check_lite_backbone.py [--dataset flickr8k] [-n 6]

Writes artifacts/results/lite-backbone-check.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.atomic import write_json  # noqa: E402
from core.data.images import load_rgb  # noqa: E402
from core.data.records import load_dataset  # noqa: E402
from core.models import towers  # noqa: E402
from core.paths import results_dir  # noqa: E402
from core.train.frozen_features import view_transform  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="flickr8k")
    ap.add_argument("-n", type=int, default=6)
    args = ap.parse_args()
    import timm
    from efficientnet_lite_pytorch import EfficientNet
    from timm.data import ImageNetInfo

    labels = ImageNetInfo()
    ds = load_dataset(args.dataset)
    dogs = [r for r in ds.split("test") if any(" dog " in f" {c.lower()} " for c in r.captions)][: args.n]
    out: dict = {"dataset": ds.name, "images": [r.id for r in dogs], "backbones": {}}
    for timm_name, size in (("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite2", 224)):
        ref_name = towers.LITE_PACKAGES[timm_name][2]
        weights = torch.load(towers.lite_weights_file(timm_name), weights_only=True)
        ref = EfficientNet.from_name(ref_name, image_size=size)
        ref.load_state_dict(weights)
        ref.eval()
        ours = timm.create_model(timm_name, num_classes=1000).eval()
        ours.load_state_dict(towers.map_reference_state(weights, ours))
        plain = timm.create_model(timm_name.removeprefix("tf_"), num_classes=1000).eval()
        plain.load_state_dict(dict(zip(plain.state_dict(), weights.values(), strict=True)))
        x = torch.stack([view_transform(size, 0)(load_rgb(ds.image_path(r))) for r in dogs])
        with torch.inference_mode():
            a, b, c = ref(x).softmax(-1), ours(x).softmax(-1), plain(x).softmax(-1)
        rows = []
        for i, r in enumerate(dogs):
            top = int(b[i].argmax())
            wrong = int(c[i].argmax())
            rows.append(
                {
                    "image": r.id,
                    "top1": labels.index_to_description(top),
                    "p": round(float(b[i, top]), 3),
                    "reference_top1": labels.index_to_description(int(a[i].argmax())),
                    "plain_efficientnet_lite_top1": labels.index_to_description(wrong),
                    "plain_p": round(float(c[i, wrong]), 3),
                }
            )
        out["backbones"][timm_name] = {
            "size": size,
            "max_abs_diff_probs_vs_reference": float((a - b).abs().max()),
            "max_abs_diff_probs_plain_vs_reference": float((a - c).abs().max()),
            "photos": rows,
        }
        for row in rows:
            print(
                timm_name,
                row["image"],
                row["top1"],
                row["p"],
                "| plain:",
                row["plain_efficientnet_lite_top1"],
                row["plain_p"],
            )
        print(timm_name, "max |p - p_ref|", out["backbones"][timm_name]["max_abs_diff_probs_vs_reference"])
    write_json(results_dir() / "lite-backbone-check.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
