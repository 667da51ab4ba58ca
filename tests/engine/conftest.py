"""Engine test fixtures. Ray fixtures live in test_ray_simulation.py (one Ray session per module)."""
