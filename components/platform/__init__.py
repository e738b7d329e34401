"""Platforms turn workloads into resources: Docker for the dev stack, Kubernetes for prod."""
