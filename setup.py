"""tftrt_keras: TensorRT deployment (TF-TRT, ONNX FP32/FP16/INT8, TensorRT engines) as a by-product of training."""

import setuptools

setuptools.setup(
    name="tftrt_keras",
    version="0.1.0",
    description="TensorRT deployment as a by-product of ordinary TensorFlow training",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=["tftrt_keras", "export"],
    python_requires=">=3.9,<3.13",
    # TensorFlow is left to the user (or to constraints/tf2.*.txt): the supported lines are 2.15, 2.17 and 2.21,
    # and GPU users install it from their own channel (tensorflow[and-cuda], NVIDIA containers). numpy 2 comes
    # with TF 2.21; the 2.15/2.17 constraints keep numpy 1.26.
    install_requires=["absl-py>=1.0", "numpy>=1.23"],
    extras_require={
        "tf215": ["tensorflow>=2.15,<2.16", "tensorflow-estimator>=2.15,<2.16", "tf-keras>=2.15,<2.16"],
        "tf217": ["tensorflow>=2.17,<2.18", "tf-keras>=2.17,<2.18"],
        # TF 2.21 no longer depends on TensorBoard; `TrtExport(log_dir=...)` writes its scalars with tf.summary.
        "tf221": ["tensorflow>=2.21,<2.22", "tf-keras>=2.21,<2.22", "tensorboard>=2.21,<2.22"],
        # The ONNX variants. On TF 2.15/2.17 pin onnx==1.18.0 (constraints files do): pip otherwise picks 1.19+,
        # which needs an ml_dtypes those TensorFlow lines cannot have and fails to import.
        "onnx": ["tf2onnx==1.17.0", "onnx>=1.18", "onnxruntime>=1.20", "onnxconverter-common>=1.16", "sympy"],
        "hub": ["tensorflow-hub>=0.16"],
        "report": ["matplotlib>=3.5"],
        # TF-TRT (TF 2.15/2.17) opens TensorRT 8.6.1; the native engines (format `trt`) want TensorRT 10 and run
        # with cuda-python (which installs and imports without a GPU, so its error paths are tested everywhere).
        "tftrt": ["tensorrt==8.6.1"],
        "cuda": ["cuda-python>=12.8,<14"],
        "trt": ["tensorrt>=10", "cuda-python>=12.8,<14"],
        # TensorRT-RTX (format `trt_rtx`): its builder and ONNX parser compile engines ahead of time on any machine,
        # GPU or not; running them needs an RTX-class GPU (compute capability 7.5, 8.6, 8.9, 12.x).
        "trt_rtx": ["tensorrt-rtx-cu13==1.7.1.116"],
        "pycuda": ["pycuda"],
        "test": ["pytest>=7", "pytest-timeout", "scikit-learn", "tensorflow-hub>=0.16", "matplotlib>=3.5"],
    },
    entry_points={"console_scripts": ["tftrt-export=export.tftrt_export:run"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
