"""Tests of the MoE adapters (specmd_predict/adapters): one per family, against its own routers."""
