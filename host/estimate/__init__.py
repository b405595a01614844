"""Float64 host reference of the board's SoC estimator (issue 5): board cell-model files and their lookups
(cellmodel), the contract's EKF and a UKF of the same model through filterpy (reference), and the binary stream
files the board runner reads and writes (streamfile)."""
