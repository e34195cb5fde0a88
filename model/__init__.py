"""AsymDSD (point-cloud ViT, asymmetric student with a cross-attention-only predictor, EMA teacher) and
Distillation with Contrast for any backbone (ViT, PointNet, DGCNN); `from_pretrained` loads a trained
encoder whose `embed` gives features of raw point clouds."""

from model.asymdsd import AsymDSD, Student, Teacher, Views
from model.dwc import DwC
from model.methods import build_method
from model.teacher_student import LossOutput, TeacherOutput
from model.batch import CropBatch, MultiCropBatch
from model.config import ModelConfig, load_model_config
from model.pretrained import Embedding, PretrainedEncoder, from_pretrained

__all__ = [
    "AsymDSD",
    "CropBatch",
    "DwC",
    "Embedding",
    "LossOutput",
    "ModelConfig",
    "MultiCropBatch",
    "PretrainedEncoder",
    "Student",
    "Teacher",
    "TeacherOutput",
    "Views",
    "build_method",
    "from_pretrained",
    "load_model_config",
]
