"""BN-aware int8 quantization: PTQ (PT2E or torch.ao fx), QAT with BN folding, data-free
DFQ (equalization + bias correction) and ZeroQ-style synthetic calibration."""
