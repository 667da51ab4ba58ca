"""worldssm: an agentic world-model engine for real-time simulated environments."""

__version__ = "0.1.0"
