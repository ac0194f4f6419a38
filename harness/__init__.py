"""aichaos.harness"""
