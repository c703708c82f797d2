r"""The Molhiv workload's data: molecule-like graphs with OGB's atom and bond features,
labelled active by a substructure rule.

A molecule is a carbon-rich tree backbone (C, N, O, S, Cl by valence-aware choice) with one
or two rings fused on (5- or 6-membered, aromatic or not, with ring nitrogens). Hydrogens
fill each atom's remaining valence. Atom features follow ``ogb.utils.features`` (atomic
number, chirality, degree, formal charge, hydrogens, radicals, hybridisation, aromaticity,
ring membership); bond features are bond type, stereo and conjugation.

The label is a pharmacophore-like rule (two parts, each local to a few atoms, as a GIN can
see them): the molecule is *active* when it has an aromatic nitrogen (an N with two aromatic
bonds) **and** a halogen bonded to an aromatic ring carbon.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cache import cached_objects

ELEMENTS = {"C": (6, 4), "N": (7, 3), "O": (8, 2), "S": (16, 2), "Cl": (17, 1)}  # atomic number, valence
SINGLE, DOUBLE, AROMATIC = 0, 1, 3  # OGB bond type indices
ORDER = {SINGLE: 1.0, DOUBLE: 2.0, AROMATIC: 1.5}


def molecule(rng: np.random.Generator) -> tuple[list[str], list[tuple[int, int, int]], set[int]]:
    """Atoms, bonds (i, j, type) and ring atoms of one molecule."""
    atoms: list[str] = []
    ring_atoms: set[int] = set()
    bonds: list[tuple[int, int, int]] = []
    for _ in range(rng.integers(1, 3)):  # rings
        size, aromatic = int(rng.choice([5, 6])), rng.random() < 0.6
        start = len(atoms)
        atoms += ["N" if rng.random() < 0.2 else "C" for _ in range(size)]
        ring_atoms.update(range(start, start + size))
        for k in range(size):
            bonds.append((start + k, start + (k + 1) % size, AROMATIC if aromatic else SINGLE))
        if start:  # join to the previous part
            bonds.append((int(rng.integers(0, start)), start, SINGLE))
    for _ in range(rng.integers(3, 12)):  # backbone atoms hung on atoms with free valence
        element = rng.choice(["C", "C", "C", "N", "O", "S", "Cl"], p=[0.3, 0.2, 0.1, 0.1, 0.15, 0.05, 0.1])
        used = _valence_used(len(atoms), bonds)
        free = [i for i, a in enumerate(atoms) if ELEMENTS[a][1] - used[i] >= 1 and a != "Cl"]
        if not free:
            break
        anchor = int(rng.choice(free))
        kind = DOUBLE if (element in ("O", "C") and ELEMENTS[atoms[anchor]][1] - used[anchor] >= 2
                          and rng.random() < 0.3) else SINGLE
        atoms.append(str(element))
        bonds.append((anchor, len(atoms) - 1, kind))
    return atoms, bonds, ring_atoms


def _valence_used(n: int, bonds) -> np.ndarray:
    used = np.zeros(n)
    for i, j, kind in bonds:
        used[i] += ORDER[kind]
        used[j] += ORDER[kind]
    return used


def active(atoms: list[str], bonds) -> bool:
    aromatic_bonds = np.zeros(len(atoms), int)
    for i, j, kind in bonds:
        if kind == AROMATIC:
            aromatic_bonds[i] += 1
            aromatic_bonds[j] += 1
    aromatic_n = any(a == "N" and aromatic_bonds[i] >= 2 for i, a in enumerate(atoms))
    halo_aryl = any(kind == SINGLE and {atoms[i], atoms[j]} == {"Cl", "C"}
                    and aromatic_bonds[i if atoms[i] == "C" else j] >= 2 for i, j, kind in bonds)
    return aromatic_n and halo_aryl


def featurize(atoms: list[str], bonds, ring_atoms: set[int], rng) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OGB-style (x, edge_index, edge_attr), both directions of every bond."""
    n = len(atoms)
    degree = np.zeros(n, int)
    aromatic = np.zeros(n, int)
    in_ring = np.isin(np.arange(n), list(ring_atoms)).astype(int)
    for i, j, kind in bonds:
        degree[i] += 1
        degree[j] += 1
        if kind == AROMATIC:
            aromatic[i] = aromatic[j] = 1
    hydrogens = np.clip([ELEMENTS[a][1] for a in atoms] - np.floor(_valence_used(n, bonds)), 0, 4).astype(int)
    hybrid = np.where(aromatic == 1, 2, 3)  # OGB: SP2 = 2, SP3 = 3
    x = np.stack([[ELEMENTS[a][0] - 1 for a in atoms], rng.integers(0, 2, n), np.minimum(degree, 10),
                  np.full(n, 5), hydrogens, np.zeros(n, int), hybrid, aromatic, in_ring], 1)
    pairs = np.array([(i, j) for i, j, _ in bonds])
    kinds = np.array([k for *_, k in bonds])
    attr = np.stack([kinds, np.zeros(len(bonds), int), (kinds != SINGLE).astype(int)], 1)
    edge_index = torch.as_tensor(np.concatenate([pairs, pairs[:, ::-1]]).T.copy())
    return torch.as_tensor(x), edge_index, torch.as_tensor(np.concatenate([attr, attr]))


def simulate(n: int, seed: int) -> tuple[list, torch.Tensor]:
    """`n` molecules as (x, edge_index, edge_attr), about half of them active, and labels (n,)."""
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    while len(graphs) < n:
        atoms, bonds, rings = molecule(rng)
        label = active(atoms, bonds)
        if label or rng.random() < 0.2:  # actives are rarer: keep the classes near balance
            graphs.append(featurize(atoms, bonds, rings, rng))
            labels.append(int(label))
    return graphs, torch.as_tensor(labels)


def load(n: int, seed: int = 0) -> tuple[list, torch.Tensor]:
    return cached_objects(f"molhiv_n{n}_s{seed}", lambda: simulate(n, seed))
