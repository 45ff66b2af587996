"""The Gradio app: browse the atlas, inspect images, steer Kandinsky 2.2."""
