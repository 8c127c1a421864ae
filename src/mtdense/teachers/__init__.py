"""Teachers: models and matchers that label what the dataset leaves unlabelled.

They sit above :mod:`mtdense.inference` (a teacher may run an mtdense model) and below the
commands. Each writes a label source beside the real labels, never over them: in the Cityscapes
layout for a Cityscapes tree, as ``ROOT/OUT/SPLIT/NAME.png`` in the encodings of ``masks/``,
``depth/`` and ``normals/`` for a ``folder`` dataset:

- :mod:`~mtdense.teachers.stereo`: stereo teachers (``(left, right) -> disparity``): SGBM and
  ONNX networks, by name through :func:`create_teacher`.
- :mod:`~mtdense.teachers.disparity`: a stereo teacher run over a split, written as Cityscapes
  disparity PNGs (:func:`generate_teacher_disparity`) with a coverage summary.
- :mod:`~mtdense.teachers.model`: segmentation pseudo-labels from a trained mtdense model
  (:class:`PseudoLabeler`, :func:`pseudo_label_split`).
- :mod:`~mtdense.teachers.layout`: checks on the output folder a teacher writes.
- :mod:`~mtdense.teachers.folder`: any teacher over a split of a folder dataset
  (:func:`label_folder_split`: atomic writes, resume, a summary), and the stereo teachers'
  folder form (:class:`StereoDepthTeacher`: right views and the ``stereo:`` rig, depth in metres).
- :mod:`~mtdense.teachers.mono`: a monocular depth network exported to ONNX, made metric per frame
  or globally by :mod:`~mtdense.teachers.align` (robust scale and shift in inverse depth).
- :mod:`~mtdense.teachers.seg`: a segmentation network exported to ONNX with its own classes,
  mapped onto the dataset's by a class map (:class:`ClassMap`).
- :mod:`~mtdense.teachers.model_folder`: a trained mtdense model as the teacher of a folder dataset.
- :mod:`~mtdense.teachers.onnx_image`: the ONNX Runtime runner the ONNX teachers share.
"""

from mtdense.teachers.align import AffineFit, fit_inverse_depth
from mtdense.teachers.disparity import TeacherSummary, generate_teacher_disparity
from mtdense.teachers.folder import FolderTeacherSummary, StereoDepthTeacher, label_folder_split
from mtdense.teachers.layout import check_folder_name
from mtdense.teachers.model import PseudoLabeler, PseudoLabelSummary, manifest_path, pseudo_label_split
from mtdense.teachers.mono import MonoDepthTeacher
from mtdense.teachers.seg import ClassMap, OnnxSegTeacher
from mtdense.teachers.stereo import (
    TEACHERS, ONNXStereoTeacher, SGBMTeacher, StereoTeacher, create_teacher, fill_background, left_right_check,
)

__all__ = [
    "StereoTeacher", "SGBMTeacher", "ONNXStereoTeacher", "TEACHERS", "create_teacher", "fill_background",
    "left_right_check", "TeacherSummary", "generate_teacher_disparity", "PseudoLabeler", "PseudoLabelSummary",
    "pseudo_label_split", "manifest_path", "check_folder_name", "label_folder_split", "FolderTeacherSummary",
    "StereoDepthTeacher", "MonoDepthTeacher", "OnnxSegTeacher", "ClassMap", "AffineFit", "fit_inverse_depth",
]
