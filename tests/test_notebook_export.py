"""``jupyter nbconvert --execute --to html`` exports a notebook whose page draws the tuning panel offline."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "notebooks" / "jupyter_nbconvert_config.py"
RENDERER = REPO / "notebooks" / "vendor" / "html-manager-1.0.15" / "embed.js"


def test_the_exported_page_holds_the_panel_and_its_renderer(tiny_dir, tmp_path):
    code = (
        "from aligned_llm import AlignedLLM, TuningPanel\n"
        f"panel = TuningPanel(AlignedLLM.from_pretrained({str(tiny_dir)!r}, device='cpu'), max_new_tokens=4)\n"
        "panel"
    )
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)], metadata={"kernelspec": kernel})
    nbformat.write(notebook, tmp_path / "panel.ipynb")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--config", str(CONFIG), "--execute", "--to", "html",
         str(tmp_path / "panel.ipynb")],
        env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    page = (tmp_path / "panel.html").read_text(encoding="utf-8")

    state_json = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', page, re.S)
    state = json.loads(state_json.group(1))["state"]
    buttons = {model["state"].get("description") for model in state.values() if model["model_name"] == "ButtonModel"}
    assert {"Generate", "Stop"} <= buttons
    (view,) = re.findall(r'<script type="application/vnd.jupyter.widget-view\+json">(.*?)</script>', page, re.S)
    assert json.loads(view)["model_id"] in state, "the cell's output is a view of the saved panel"

    assert "data:text/javascript;base64," + base64.b64encode(RENDERER.read_bytes()).decode() in page
    assert "unpkg.com" not in page and "html-manager@" not in page, "no widget JavaScript from a CDN"
    assert "require.min.js" not in page
