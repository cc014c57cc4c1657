"""Datasets (bundled MNIST, image folders, torchvision sets) and the eval / train transforms.

>>> from vitlab.data import create_transform, open_source, Preprocess, build_eval_transform
>>> tf = create_transform(model)  # doctest: +SKIP  (the eval transform of the model's weights)
>>> val = open_source("mnist", "val", build_eval_transform(Preprocess((28, 28), 1, (0.5,), (0.5,), 1.0, "bilinear")))
"""

from vitlab.data.bad_samples import ImagePolicy
from vitlab.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset
from vitlab.data.image_io import ALLOWED_FORMATS, max_image_pixels, open_image
from vitlab.data.mnist import MNIST_CLASSES, load_mnist_5k, load_mnist_test
from vitlab.data.preprocess import EvalPreprocess, EvalTransform, create_transform, resolve_preprocess
from vitlab.data.sources import describe_source, open_source, split_folder
from vitlab.data.tensor_dataset import TensorImageDataset
from vitlab.data.torchvision_sets import TORCHVISION_SETS, TorchvisionDataset, open_torchvision
from vitlab.data.transforms import AugmentConfig, Preprocess, build_eval_transform, build_train_transform

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "MNIST_CLASSES",
    "TORCHVISION_SETS",
    "AugmentConfig",
    "EvalPreprocess",
    "EvalTransform",
    "ImageFolderDataset",
    "ImagePolicy",
    "Preprocess",
    "TensorImageDataset",
    "TorchvisionDataset",
    "build_eval_transform",
    "build_train_transform",
    "create_transform",
    "describe_source",
    "load_mnist_5k",
    "load_mnist_test",
    "max_image_pixels",
    "open_image",
    "open_source",
    "open_torchvision",
    "resolve_preprocess",
    "split_folder",
]
