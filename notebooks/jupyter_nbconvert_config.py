"""nbconvert settings that make an exported notebook draw its widgets offline.

    jupyter nbconvert --config notebooks/jupyter_nbconvert_config.py --execute --to html notebooks/tuning.ipynb

Plain ``jupyter nbconvert --execute --to html`` works too, but the page then loads the widget
renderer from a CDN when it is opened. With this file the renderer (the vendored
``@jupyter-widgets/html-manager`` ``embed.js``, see ``vendor/README.md``) is embedded in the page
as a data URL, and the page loads no require.js (the standalone renderer does not need it).
"""

import base64
from pathlib import Path

c = get_config()  # noqa: F821 (traitlets defines it when it loads this file)

RENDERER = Path(__file__).resolve().parent / "vendor" / "html-manager-1.0.15" / "embed.js"
c.ExecutePreprocessor.store_widget_state = True
c.HTMLExporter.widget_renderer_url = "data:text/javascript;base64," + base64.b64encode(RENDERER.read_bytes()).decode()
c.HTMLExporter.require_js_url = "data:text/javascript,"
