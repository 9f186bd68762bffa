"""dmltf: deep metric learning for TensorFlow 2 / Keras 3."""
from setuptools import find_packages, setup

setup(
    name="dmltf",
    version="0.1.0",
    description="Deep metric learning for TensorFlow 2 / Keras 3: losses, miners, samplers, "
    "retrieval metrics, a distributed trainer and reference-faithful ports.",
    python_requires=">=3.10",
    packages=find_packages(include=["dmltf", "dmltf.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "numpy",
        "scipy",
        "h5py",
        "absl-py",
        "tensorboard",  # tf.summary needs it; TensorFlow 2.21 no longer installs it
        "faiss-cpu",
        "scikit-learn",
        "pillow",
    ],
    extras_require={
        # The tests also exercise the optional TFDS reader and the OpenCV resize of the DVML layout;
        # pytest-xdist runs them in two processes (the README's test command); jax (CPU) runs the
        # backend-neutral ones a second time on Keras' JAX backend.
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "tensorflow-datasets", "importlib_resources",
                 "opencv-python-headless", "jax"],
        "tfds": ["tensorflow-datasets"],
        # A bare CUDA 12 machine (bench/gpu_check.py): TensorFlow's CUDA libraries from pip and GPU
        # faiss, which replaces faiss-cpu (both install the module faiss: see the README's GPU check).
        "gpu": ["tensorflow[and-cuda]>=2.16", "faiss-gpu-cu12"],
    },
)
