"""The browser studio (Gradio). It only calls the engine; it never copies the engine's logic."""
