"""sandmle: on-policy RL for machine-learning-engineering agents in micro sandboxes."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "chex>=0.1.90,<0.2",
    "transformers>=5.24,<6",
    "tokenizers>=0.23,<0.24",
    "safetensors>=0.8,<0.9",
    "numpy>=2.4,<3",
    "scipy>=1.15,<2",
    "scikit-learn>=1.9,<2",
    "pandas>=3.1,<4",
    "ml-collections>=1.1,<2",
    "absl-py>=2.5,<3",
    "tensorboardX>=2.6,<3",
    "tqdm>=4.66,<5",
    "rich>=13,<16",
    "matplotlib>=3.9,<4",
    "psutil>=6,<8",
    "jinja2>=3.1.6,<4",
    # Real-language words for generated text tasks (lists ship in the wheel, offline).
    "wordfreq>=3.1,<3.2",
    "pyyaml>=6,<7",
    "pyseccomp>=0.1.2,<0.2",  # the sandbox's syscall filter (ctypes over libseccomp2)
    # sandmle-serve's HTTP server (OpenAI-compatible routes).
    "fastapi>=0.165,<0.200",
    "uvicorn>=0.54,<1",
]

EXTRAS = {
    # TensorBoard reads the metric files back in tests (sandmle.metrics.read_scalar_events).
    # The serve tests talk to sandmle-serve through the official openai client.
    # pytest 9.2 ignores pytest-xdist's xdist_group (pytest-xdist#1386): pytest.ini groups
    # the modules whose fixture is a whole run onto one worker.
    "test": ["pytest>=8,<9.2", "pytest-xdist>=3.6,<4", "tensorboard>=2.21,<3",
             "openai>=3.57,<4"],
    # sandmle-eval --policy=openai (an OpenAI-compatible endpoint as the policy).
    "serve": ["openai>=3.57,<4"],
    # `tensorboard --logdir WORKDIR` and the metrics reader; writing needs only tensorboardX.
    "tensorboard": ["tensorboard>=2.21,<3"],
    # CPU wheel on disk here; a bare `torch` would pull a multi-GB CUDA build.
    "torch": ["torch==2.13.0"],
    "ray": ["ray[default]>=2.60,<3"],
    "tpu": ["jax[tpu]>=0.10.2,<0.11"],
    "cuda": ["jax[cuda12]>=0.10.2,<0.11"],
}

CONSOLE_SCRIPTS = [
    "sandmle=sandmle.main:run",
    "sandmle-sweep=sandmle.sweep:run",
    "sandmle-envgen=sandmle.envgen.cli:run",
    "sandmle-memplan=sandmle.rl.memory_plan:run",
    "sandmle-test-tokenizer=sandmle.models.tiny_tokenizer:run",
    "sandmle-grade=sandmle.tasks.cli:run",
    "sandmle-import=sandmle.tasks.import_cli:run",
    "sandmle-inspect=sandmle.inspector:run",
    "sandmle-params=sandmle.models.params:run",
    "sandmle-eval=sandmle.eval_cli:run",
    "sandmle-report=sandmle.report_cli:run",
    "sandmle-export=sandmle.export:run",
    "sandmle-serve=sandmle.serve:run",
]

setup(
    name="sandmle",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10",
    packages=find_packages(include=["sandmle", "sandmle.*", "configs", "configs.*"]),
    package_data={"sandmle": ["envgen/seeds/*.json", "envgen/domains/*.json", "models/*.jinja"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
