"""Teachers: models and matchers that label what the dataset leaves unlabelled.

They sit above :mod:`mtdense.inference` (a teacher may run an mtdense model) and below the
commands. Each writes a label source in the Cityscapes layout beside the real labels, never
over them:

- :mod:`~mtdense.teachers.stereo`: stereo teachers (``(left, right) -> disparity``): SGBM and
  ONNX networks, by name through :func:`create_teacher`.
- :mod:`~mtdense.teachers.disparity`: a stereo teacher run over a split, written as Cityscapes
  disparity PNGs (:func:`generate_teacher_disparity`) with a coverage summary.
- :mod:`~mtdense.teachers.model`: segmentation pseudo-labels from a trained mtdense model
  (:class:`PseudoLabeler`, :func:`pseudo_label_split`).
- :mod:`~mtdense.teachers.layout`: checks on the output folder a teacher writes.
"""

from mtdense.teachers.disparity import TeacherSummary, generate_teacher_disparity
from mtdense.teachers.layout import check_folder_name
from mtdense.teachers.model import PseudoLabeler, PseudoLabelSummary, manifest_path, pseudo_label_split
from mtdense.teachers.stereo import (
    TEACHERS, ONNXStereoTeacher, SGBMTeacher, StereoTeacher, create_teacher, fill_background, left_right_check,
)

__all__ = [
    "StereoTeacher", "SGBMTeacher", "ONNXStereoTeacher", "TEACHERS", "create_teacher", "fill_background",
    "left_right_check", "TeacherSummary", "generate_teacher_disparity", "PseudoLabeler", "PseudoLabelSummary",
    "pseudo_label_split", "manifest_path", "check_folder_name",
]
