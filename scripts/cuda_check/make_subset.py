"""The device check's inputs, in the git-ignored folder .gpu/ (the device machine gets only the repo):
a Flickr8k subset (800 train, 200 val, 400 test images with their captions and split lists) and the
wheels its Python 3.12 lacks (see /work/.library/device/README.md for the pip download line).

Usage: python3 scripts/cuda_check/make_subset.py ../shared/data/flickr8k
then, through the device tool: bash scripts/cuda_check/run.sh (carry .gpu)."""

import shutil
import sys
from pathlib import Path

SIZES = {"train": 800, "dev": 200, "test": 400}


def main(source: Path, target: Path = Path(".gpu/f8k")) -> None:
    (target / "images").mkdir(parents=True, exist_ok=True)
    keep: set[str] = set()
    for split, n in SIZES.items():
        name = f"Flickr_8k.{split}Images.txt"
        names = (source / name).read_text().split()[:n]
        keep.update(names)
        (target / name).write_text("\n".join(names) + "\n")
    for name in sorted(keep):
        shutil.copyfile(source / "images" / name, target / "images" / name)
    lines = [
        line for line in (source / "captions.txt").read_text().splitlines() if line.split("#", 1)[0] in keep
    ]
    (target / "captions.txt").write_text("\n".join(lines) + "\n")
    print(f"{len(keep)} images, {len(lines)} captions -> {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
