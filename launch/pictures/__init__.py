"""Pictures of pretraining and evaluation, as matplotlib Figures built from plain arrays.

* `crops_figure`, `masks_figure`, `attention_figure`: what the model sees of one shape (`clouds`);
* `embedding_figure`, `comparison_figure`, `confusion_figure`: evaluation features (one encoder, or several
  side by side with their accuracies) and predictions (`evaluation`);
* `part_segmentation_figure`: predicted parts of shapes beside their ground truth (`segmentation`);
* `loss_curves_figure`, `loss_history_from_mlflow`: a run's curves (`training`);
* `save_figure`: PNG, PDF and/or SVG files, and MLflow artifacts under `pictures/` (`output`).

`python -m launch.pictures` draws a few shapes' pictures from an exported encoder and a run's loss curves.
"""

from launch.pictures.clouds import attention_figure, crops_figure, masks_figure
from launch.pictures.evaluation import comparison_figure, confusion_figure, embed_2d, embedding_figure
from launch.pictures.output import save_figure
from launch.pictures.segmentation import part_segmentation_figure
from launch.pictures.training import loss_curves_figure, loss_history_from_mlflow

__all__ = ["attention_figure", "comparison_figure", "confusion_figure", "crops_figure", "embed_2d", "embedding_figure",
           "loss_curves_figure", "loss_history_from_mlflow", "masks_figure", "part_segmentation_figure", "save_figure"]
