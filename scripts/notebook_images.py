"""Render the images in docs/notebooks.md: the tuning panel after a run, the token views, the signal plots.

The panel is a live ipywidgets view, so it is saved as a standalone HTML page (its widget state
embedded, drawn by ``@jupyter-widgets/html-manager``) and photographed with headless Chromium;
the token views are photographed the same way; the plots are saved by matplotlib.

    python scripts/notebook_images.py [--out docs/images] [--chromium chromium] [--widgets-js PATH]

Needs Chromium and, unless ``--widgets-js`` names an ``embed.js``, ``npm`` to fetch the widget
renderer once. Runs on the bundled model on the CPU (about a minute).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ipywidgets.embed import embed_minimal_html
from PIL import Image, ImageChops

from aligned_llm import AlignedLLM, TuningPanel, signal_figure, token_html

HTML_MANAGER = "@jupyter-widgets/html-manager@1"  # the renderer that matches ipywidgets 8
PROMPT = "Why is the sky blue?"
PRINCIPLE = "Be extremely brief: answer in at most ten words."
PAGE = '<!doctype html><meta charset="utf-8"><body style="margin:16px;font-family:sans-serif;width:{width}px">{body}'


def widgets_js(folder: Path) -> Path:
    """The html-manager's standalone ``embed.js``, fetched from the npm registry into ``folder``."""
    subprocess.run(["npm", "pack", "--silent", HTML_MANAGER], cwd=folder, check=True, capture_output=True)
    with tarfile.open(next(folder.glob("*.tgz"))) as archive:
        archive.extractall(folder, filter="data")
    return folder / "package" / "dist" / "embed.js"


def photograph(chromium: str, page: Path, image: Path, width: int, height: int) -> None:
    """A PNG of ``page`` as headless Chromium draws it at ``width``×``height``, blank bottom cropped."""
    subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--allow-file-access-from-files", "--virtual-time-budget=10000",
            f"--window-size={width},{height}", f"--screenshot={image}", page.as_uri(),
        ],
        check=True,
        capture_output=True,
    )
    with Image.open(image) as shot:
        picture = shot.convert("RGB")
    box = ImageChops.difference(picture, Image.new("RGB", picture.size, "white")).getbbox()
    if box is not None:
        picture = picture.crop((0, 0, picture.width, min(picture.height, box[3] + 16)))
    picture.save(image)
    print("wrote", image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--widgets-js", type=Path, help="a local @jupyter-widgets/html-manager dist/embed.js")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    llm = AlignedLLM.default(device="cpu")
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        script = args.widgets_js or widgets_js(scratch_dir)

        panel = TuningPanel(llm, method="opad", max_new_tokens=40)
        panel.prompt.value, panel.principle.value, panel.beta.value = PROMPT, PRINCIPLE, 0.5
        panel.generate()
        if panel.wait(600) != "done":
            raise SystemExit(f"the panel run ended {panel.state}: {panel.last_error}")
        panel_page = scratch_dir / "panel.html"
        embed_minimal_html(panel_page, views=[panel.widget], title="TuningPanel", requirejs=False,
                           embed_url=script.resolve().as_uri())
        photograph(args.chromium, panel_page, args.out / "tuning-panel.png", 1100, 1250)

        opad = llm.generate(PROMPT, method="opad", principle=PRINCIPLE, beta=0.5, max_new_tokens=40, trace=True)
        sailor = {"profile": "A retired sailor who loves the sea.", "beta": 1.0, "max_new_tokens": 40, "trace": True}
        pad = llm.generate("Suggest a weekend activity.", method="pad", **sailor)
        pad_plain = llm.generate("Suggest a weekend activity.", method="pad", pad_base="plain", **sailor)
        pair = AlignedLLM.default(adapter="bundled", device="cpu")
        aad = pair.generate("Explain how a rainbow forms.", method="aad", alpha=0.1, max_new_tokens=40, trace=True)
        for name, result in (("opad", opad), ("pad", pad), ("pad-plain", pad_plain), ("aad", aad)):
            page = scratch_dir / f"{name}.html"
            page.write_text(PAGE.format(width=860, body=token_html(result)), encoding="utf-8")
            photograph(args.chromium, page, args.out / f"token-view-{name}.png", 900, 400)
            signal_figure(result).savefig(args.out / f"signal-{name}.png", dpi=90)
            print("wrote", args.out / f"signal-{name}.png")


if __name__ == "__main__":
    main()
