"""mrf_monai: diffusion-model reconstruction for MR Fingerprinting (MRF-IDDPM) on MONAI.

The sub-packages follow the data flow: ``io`` (raw data and maps), ``physics`` (sequence,
EPG, dictionary), ``acquisition`` (trajectories, density compensation, NUFFT operators),
``phantoms`` and ``simulation`` (training and test subjects), ``transforms`` (MONAI
transforms), ``diffusion`` (MRF-IDDPM), ``baselines``, ``matching`` and ``evaluation``.
"""

__version__ = "0.1.0"
