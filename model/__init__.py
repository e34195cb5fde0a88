"""AsymDSD: point-cloud ViT, asymmetric student with a cross-attention-only predictor, EMA teacher, losses."""

from model.asymdsd import AsymDSD, LossOutput, Student, Teacher, TeacherOutput, Views
from model.batch import CropBatch, MultiCropBatch
from model.config import ModelConfig, load_model_config

__all__ = [
    "AsymDSD",
    "CropBatch",
    "LossOutput",
    "ModelConfig",
    "MultiCropBatch",
    "Student",
    "Teacher",
    "TeacherOutput",
    "Views",
    "load_model_config",
]
