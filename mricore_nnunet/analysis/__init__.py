"""Analyses of frozen encoder features: linear probing, zero-shot segmentation and set similarity.

- `probe`: logistic regression on slice or volume embeddings, stratified k-fold cross-validation.
- `zeroshot`: k-means clustering of patch features scored by Dice, and one-click segmentation by
  cosine similarity to a prompted prototype.
- `similarity`: Fréchet distance, MMD and centroid cosine distance between two image sets.

Embeddings come from `mricore_nnunet.embed` and are cached as its `<case>.npz` files.
"""

from .probe import ProbeResult, run_probe
from .similarity import SimilarityResult, centroid_cosine_distance, compare_image_sets, frechet_distance, mmd_rbf
from .zeroshot import PromptResult, ZeroShotResult, evaluate_zeroshot, segment_from_prompt

__all__ = [
    "ProbeResult",
    "PromptResult",
    "SimilarityResult",
    "ZeroShotResult",
    "centroid_cosine_distance",
    "compare_image_sets",
    "evaluate_zeroshot",
    "frechet_distance",
    "mmd_rbf",
    "run_probe",
    "segment_from_prompt",
]
