"""AsymDSD: point-cloud ViT, asymmetric student with a cross-attention-only predictor, EMA teacher, losses;
`from_pretrained` loads a trained encoder whose `embed` gives features of raw point clouds."""

from model.asymdsd import AsymDSD, LossOutput, Student, Teacher, TeacherOutput, Views
from model.batch import CropBatch, MultiCropBatch
from model.config import ModelConfig, load_model_config
from model.pretrained import Embedding, PretrainedEncoder, from_pretrained

__all__ = [
    "AsymDSD",
    "CropBatch",
    "Embedding",
    "LossOutput",
    "ModelConfig",
    "MultiCropBatch",
    "PretrainedEncoder",
    "Student",
    "Teacher",
    "TeacherOutput",
    "Views",
    "from_pretrained",
    "load_model_config",
]
