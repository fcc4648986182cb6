"""Relation discovery and Jacobians for the eligibility-trace rules."""

from chronograd.traces.intercept import (
    LinearCall,
    find_relations,
    intercept_linears,
    relation_output,
)

__all__ = ["LinearCall", "find_relations", "intercept_linears", "relation_output"]
