"""The reason codes and the thresholds of a curation run, with why each default is what it is.

The codes are a contract (the dashboard filters on them, users' queries name them): add
new ones, never rename. Thresholds are recorded with each run (``runs.config``), so a
stored flag can always be traced to the cut that made it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from evaluator.errors import InputError

# code -> what it means. The fixed, documented set (README "Curation" lists it).
REASONS: dict[str, str] = {
    "unreadable": "the file cannot be decoded (empty, truncated, not an image, a decompression bomb)",
    "low_resolution": "the shorter side is below --min-side pixels",
    "extreme_aspect": "long side / short side is above --max-aspect",
    "duplicate": "byte-identical (same SHA-256) to an earlier file of the set; the earliest path is kept",
    "near_duplicate": "the same picture resized, recompressed or lightly cropped (perceptual hash within "
                      "--phash-distance bits, or embedding cosine >= --near-cosine); duplicate_of names the one kept",
    "watermark_sd": "carries Stable Diffusion's invisible dwtDct watermark (bit agreement >= --sd-mark-agreement)",
    "watermark": "LAION's visible-watermark detector gives p(watermark) >= --max-watermark",
    "aesthetic_low": "LAION aesthetic score below --min-aesthetic",
    "outlier": "robust z-score of the cosine to its artist's centroid below -(--outlier-z)",
}


@dataclass(frozen=True)
class Thresholds:
    """The cuts behind each flag. Defaults follow LAION's practice where there is one."""

    # The default; LAION's SD training subsets kept originals >= 512, which is
    # --min-side 512. Below 256 a 512-px model trains on upsampled blur.
    min_side: int = 256
    # Beyond 3:1 an SD bucket (kohya's max_aspect is ~4 at 512^2) crops most of the picture.
    max_aspect: float = 3.0
    # Bits of 64 between perceptual hashes (imagehash.phash, full image and its centre 90%).
    # Measured on the 168 real images: resizes and JPEG q70 move <= 2 bits, centre crops up
    # to 7% per side <= 10, a 3% one-side crop <= 10; unrelated pictures >= 14.
    phash_distance: int = 10
    # clip-retrieval's dedup cosine (its --deduplicate uses 0.94 on CLIP embeddings).
    near_cosine: float = 0.94
    # Bit agreement with a known SD message. Measured on the real images (README): unmarked
    # images agree at most 0.581 (136-bit SD1 message) / 0.625 (48-bit SDXL); 73% of
    # losslessly marked ones reach >= 0.80 (the rest do not hold dwtDct at all, ~0.5).
    sd_mark_agreement: float = 0.80
    # LAION-5B's "pwatermark < 0.5" cut behind SD's training sets.
    max_watermark: float = 0.5
    # LAION-Aesthetics "5+" (improved_aesthetics_5plus), the set SD 1.x was finished on.
    min_aesthetic: float = 5.0
    # Iglewicz & Hoaglin's outlier cut for the modified (median/MAD) z-score.
    outlier_z: float = 3.5

    def validate(self) -> None:
        if self.min_side < 1:
            raise InputError(f"--min-side must be >= 1 but is {self.min_side}")
        if not self.max_aspect >= 1.0:
            raise InputError(f"--max-aspect must be >= 1 but is {self.max_aspect}")
        if not 0 <= self.phash_distance <= 64:
            raise InputError(f"--phash-distance must be 0..64 bits but is {self.phash_distance}")
        for name in ("near_cosine", "sd_mark_agreement", "max_watermark"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} must be in [0, 1] but is {value}")
        if not self.outlier_z > 0:
            raise InputError(f"--outlier-z must be > 0 but is {self.outlier_z}")

    def as_dict(self) -> dict:
        return asdict(self)


def reasons_table() -> str:
    """The reason codes as a Markdown table (the README's list)."""
    lines = ["| code | meaning |", "| --- | --- |"]
    lines += [f"| `{code}` | {meaning} |" for code, meaning in REASONS.items()]
    return "\n".join(lines)
