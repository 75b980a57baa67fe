"""Regenerate the bad-checkpoint corpus (tiny files, committed). Run: python make_checkpoints.py

empty.safetensors (0 bytes), text.safetensors (text), truncated.safetensors (header
promises more bytes than the file has), not-sd.safetensors (valid, but a VAE-only
state dict: no text encoder keys), tensors.ckpt (a pickle holding only tensors: loads
with weights_only=True under --allow-pickle), evil.ckpt (a pickle that would call a
function when unpickled: weights_only=True refuses it; the function is harmless print).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save, save_file

HERE = Path(__file__).resolve().parent


class Evil:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def main() -> None:
    (HERE / "empty.safetensors").write_bytes(b"")
    (HERE / "text.safetensors").write_text("model weights go here\n")
    blob = save({"model.diffusion_model.conv_in.weight": torch.zeros(8, 4, 3, 3)})
    (HERE / "truncated.safetensors").write_bytes(blob[: len(blob) - 200])
    save_file({"first_stage_model.encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(HERE / "not-sd.safetensors"))
    torch.save({"state_dict": {"cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(4)}},
               str(HERE / "tensors.ckpt"))
    torch.save({"state_dict": {"x": torch.zeros(2)}, "payload": Evil()}, str(HERE / "evil.ckpt"))


if __name__ == "__main__":
    main()
