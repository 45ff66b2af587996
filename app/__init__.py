"""The app: browse an atlas, inspect images, steer Kandinsky 2.2 (see app/ui.py and README)."""

import os

# No Gradio analytics, set before any app module imports gradio (Blocks also get analytics_enabled=False).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
