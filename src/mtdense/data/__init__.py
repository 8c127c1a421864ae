"""Data: the Cityscapes label table, depth encodings, the Cityscapes-layout dataset, joint
transforms, a pre-resized cache, the synthetic stereo city and stereo teachers.

Submodules are imported where they are used (``from mtdense.data.cityscapes import
CityscapesDataset``) so that importing :mod:`mtdense` stays light.
"""
