"""Triton kernels of fastadapter, installed as fastadapter.kernels."""
