"""gr.Blocks whose input checks end in one short page error, not a traceback in the server log.

Gradio prints a traceback for every exception raised while it reads an event's inputs unless it
is a `gr.Error(print_exception=False)`: a server path posted as the image (InvalidPathError), a
model name that is not in the picker (echoed in full: 10,000 characters), a slider sent 'abc'.
These are a client's mistakes; each is one line on the page here, at most `MAX_MESSAGE` characters.
"""

from __future__ import annotations

import logging

import gradio as gr

from ovdet.demo.callbacks import plain_message

MAX_MESSAGE = 300  # characters of a client's error shown (values it sent are echoed inside)
log = logging.getLogger("ovdet.demo")


class DemoBlocks(gr.Blocks):
    """gr.Blocks (same page and API) turning any failure to read an event's inputs into one plain line."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error as err:
            if not err.print_exception and len(str(err.message)) <= MAX_MESSAGE:
                raise
            raise gr.Error(short(str(err.message)), print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - only the client's inputs are read here
            message = client_message(err)
            log.info("ovdet demo: refused an input: %s", message)
            raise gr.Error(message, print_exception=False) from None


def client_message(err: Exception) -> str:
    """What the page shows for an input Gradio could not read: no server path, one line."""
    name = type(err).__name__
    if name == "InvalidPathError":
        return "the image must be uploaded to this page first; a file path on the server is not an input"
    if name == "ComponentProcessingError":  # Gradio's own text names the component and the value sent
        first = str(err).split("\n")[0].split(" of the event handler")[0]
        return short(f"{first}: the value sent is not one it accepts")
    return short(f"an input could not be read ({plain_message(err)})")


def short(text: str) -> str:
    """One line of at most MAX_MESSAGE characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
