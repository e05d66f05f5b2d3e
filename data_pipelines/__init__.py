"""Harvest pipeline: run an MoE model over text and store, per token and MoE layer, router inputs and chosen experts."""
