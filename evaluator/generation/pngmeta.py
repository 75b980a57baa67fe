"""PNG text chunks: the ``parameters`` convention of SD tools, written and read back.

AUTOMATIC1111 (and Forge, SD.Next, civitai, many viewers) store generation settings in
a PNG ``tEXt``/``iTXt`` chunk named ``parameters``::

    a painting in the style of Claude Monet
    Negative prompt: blurry
    Steps: 25, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 1a2b3c4d5e, Model: sd15

The prompt may span lines; values that contain commas are double-quoted. We also add
an ``atelier`` chunk with the work unit as JSON, so an image found on disk can be traced
to its exact unit. ComfyUI stores its node graph in a ``prompt`` chunk instead; the
reader extracts the sampler settings from it.

Reads and writes PNG bytes in memory (callers write the files); ``png_is_complete``
reads the last 12 bytes of a PNG on disk to tell a whole file from a cut-off one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"
SETTING_PATTERN = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _quote(value: Any) -> str:
    text = str(value)
    if any(c in text for c in ',:\n"'):
        return json.dumps(text, ensure_ascii=False)
    return text


@dataclass(frozen=True)
class InfotextParams:
    """The settings of one image, as the A1111 ``parameters`` text (the "infotext") shows them.

    The text is a contract with A1111, civitai and image viewers: ``text()`` must not
    change byte for byte (tests compare it).
    """

    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    guidance: float
    seed: int
    width: int
    height: int
    model_hash: str | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The A1111 ``parameters`` text for one image."""
        lines = [self.prompt.replace("\r", "")]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        cfg = f"{self.guidance:g}" if isinstance(self.guidance, float) else str(self.guidance)
        settings: list[tuple[str, Any]] = [
            ("Steps", self.steps),
            ("Sampler", self.sampler),
            ("CFG scale", cfg),
            ("Seed", self.seed),
            ("Size", f"{self.width}x{self.height}"),
        ]
        if self.model_hash:
            settings.append(("Model hash", self.model_hash))
        if self.model:
            settings.append(("Model", self.model))
        settings.extend((self.extra or {}).items())
        lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in settings))
        return "\n".join(lines)


def format_parameters(
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str,
    guidance: float,
    seed: int,
    width: int,
    height: int,
    *,
    model_hash: str | None = None,
    model: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """The A1111 ``parameters`` text for one image (``InfotextParams.text`` in call form)."""
    return InfotextParams(
        prompt, negative_prompt, steps, sampler, guidance, seed, width, height,
        model_hash=model_hash, model=model, extra=dict(extra or {}),
    ).text()


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse A1111 ``parameters`` text back into a dict.

    Keys: ``prompt``, ``negative_prompt`` and every ``Key: value`` of the settings
    line, plus typed ``steps``, ``seed``, ``guidance``, ``width``, ``height``,
    ``sampler``, ``model``, ``model_hash`` when present. Text with no settings line is
    all prompt.
    """
    lines = text.replace("\r\n", "\n").strip("\n").split("\n")
    settings_line = ""
    if lines and len(SETTING_PATTERN.findall(lines[-1])) >= 3 and "Steps:" in lines[-1]:
        settings_line = lines.pop()
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:") :].strip()
        target.append(line)
    result: dict[str, Any] = {"prompt": "\n".join(prompt_lines).strip(), "negative_prompt": "\n".join(negative_lines).strip()}
    raw: dict[str, str] = {}
    for key, value in SETTING_PATTERN.findall(settings_line):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = value[1:-1]
        raw[key.strip()] = value
    result["settings"] = raw
    _typed(result, raw)
    return result


def _typed(result: dict, raw: dict[str, str]) -> None:
    def number(key: str, cast):
        try:
            return cast(raw[key])
        except (KeyError, ValueError):
            return None

    result["steps"] = number("Steps", int)
    result["seed"] = number("Seed", int)
    result["guidance"] = number("CFG scale", float)
    result["sampler"] = raw.get("Sampler")
    result["model"] = raw.get("Model")
    result["model_hash"] = raw.get("Model hash")
    size = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", raw.get("Size", ""))
    result["width"], result["height"] = (int(size.group(1)), int(size.group(2))) if size else (None, None)


def parse_comfyui(prompt_json: str) -> dict[str, Any] | None:
    """Sampler settings from a ComfyUI ``prompt`` chunk (its API graph), or None.

    Follows the first KSampler's ``positive``/``negative`` links to their text nodes,
    ``latent_image`` to the empty latent's size, and ``model`` to the checkpoint loader.
    """
    try:
        graph = json.loads(prompt_json)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(graph, dict):
        return None
    nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict)}

    def follow(link, want: tuple[str, ...], depth: int = 0):
        if not (isinstance(link, list) and link) or depth > 8:
            return None
        node = nodes.get(str(link[0]))
        if node is None:
            return None
        inputs = node.get("inputs", {})
        for key in want:
            if key in inputs and not isinstance(inputs[key], list):
                return node
        for value in inputs.values():  # pass-through nodes (LoRA loaders, reroutes)
            if isinstance(value, list):
                found = follow(value, want, depth + 1)
                if found is not None:
                    return found
        return None

    for node in nodes.values():
        if not str(node.get("class_type", "")).startswith("KSampler"):
            continue
        inputs = node.get("inputs", {})
        positive = follow(inputs.get("positive"), ("text", "text_g"))
        negative = follow(inputs.get("negative"), ("text", "text_g"))
        latent = follow(inputs.get("latent_image"), ("width",))
        model = follow(inputs.get("model"), ("ckpt_name",))
        seed = inputs.get("seed", inputs.get("noise_seed"))

        def text_of(n):
            if n is None:
                return ""
            i = n["inputs"]
            return str(i.get("text", i.get("text_g", "")))

        return {
            "prompt": text_of(positive),
            "negative_prompt": text_of(negative),
            "seed": int(seed) if isinstance(seed, int | float) else None,
            "steps": int(inputs["steps"]) if isinstance(inputs.get("steps"), int | float) else None,
            "guidance": float(inputs["cfg"]) if isinstance(inputs.get("cfg"), int | float) else None,
            "sampler": str(inputs.get("sampler_name", "")) or None,
            "width": int(latent["inputs"]["width"]) if latent and isinstance(latent["inputs"].get("width"), int) else None,
            "height": int(latent["inputs"]["height"]) if latent and isinstance(latent["inputs"].get("height"), int) else None,
            "model": Path(str(model["inputs"]["ckpt_name"])).stem if model else None,
            "model_hash": None,
            "settings": {},
        }
    return None


def png_info(image: Any, parameters: str, unit: dict | None = None):
    """A ``PngInfo`` with the ``parameters`` chunk (and ``atelier`` unit JSON)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    # iTXt (UTF-8) keeps non-Latin-1 prompts; A1111 readers accept tEXt and iTXt.
    info.add_itxt("parameters", parameters)
    if unit is not None:
        info.add_itxt("atelier", json.dumps(unit, ensure_ascii=False, sort_keys=True))
    return info


def encode_png(image: Any, parameters: str, unit: dict | None = None, compress_level: int = 4) -> bytes:
    """PNG bytes of a PIL image with its text chunks (level 4: near-max size for ~1/3 the time)."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(image, parameters, unit), compress_level=compress_level)
    return buffer.getvalue()


def png_is_complete(path: Path) -> bool:
    """A PNG that ends with its IEND chunk (cheap: reads 12 bytes, no decoding)."""
    try:
        size = path.stat().st_size
        if size < 57:  # signature + IHDR + IDAT + IEND
            return False
        with open(path, "rb") as handle:
            if handle.read(8) != PNG_SIGNATURE:
                return False
            handle.seek(size - 12)
            return handle.read(12) == PNG_TRAILER
    except OSError:
        return False


def read_text_chunks(image: Any) -> dict[str, str]:
    """The text chunks of an opened PIL image (PNG tEXt/iTXt/zTXt; WebP/JPEG EXIF comment)."""
    chunks = {}
    for key, value in (getattr(image, "text", None) or {}).items():
        chunks[str(key)] = str(value)
    if not chunks:
        for key, value in image.info.items():
            if isinstance(value, str):
                chunks[str(key)] = value
        try:  # A1111 writes parameters of JPEG/WebP into EXIF UserComment
            exif = image.getexif().get_ifd(0x8769)
            comment = exif.get(0x9286)
            if isinstance(comment, bytes):
                text = comment[8:].decode("utf-16-be" if comment[:8] == b"UNICODE\0" else "utf-8", "ignore")
                if "Steps:" in text:
                    chunks.setdefault("parameters", text.strip("\x00"))
        except Exception:
            pass
    return chunks


def read_generation_info(image: Any) -> dict[str, Any] | None:
    """Parsed A1111 ``parameters`` or ComfyUI ``prompt`` settings of an image, if any."""
    chunks = read_text_chunks(image)
    if "atelier" in chunks:
        try:
            unit = json.loads(chunks["atelier"])
            if isinstance(unit, dict):
                parsed = parse_parameters(chunks.get("parameters", ""))
                parsed["unit"] = unit
                return parsed
        except json.JSONDecodeError:
            pass
    if chunks.get("parameters"):
        return parse_parameters(chunks["parameters"])
    if chunks.get("prompt"):
        return parse_comfyui(chunks["prompt"])
    return None
