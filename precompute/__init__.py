"""Offline precompute: CLIP / Kandinsky-prior activations and the atlas the app browses."""
