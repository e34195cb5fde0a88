"""AsymDSD: point-cloud ViT, asymmetric student with a cross-attention-only predictor, EMA teacher, losses."""

from model.asymdsd import AsymDSD, CropBatch, LossOutput, MultiCropBatch, Student, Teacher, TeacherOutput, Views
from model.config import ConfigError, ModelConfig, load_model_config

__all__ = [
    "AsymDSD",
    "ConfigError",
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
