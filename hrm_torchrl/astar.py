"""A* on the 11x11 maze grids, 4-connected, unit step cost, Manhattan heuristic."""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np

# Action order of the mazes: 0 north, 1 east, 2 south, 3 west, as (row, col) offsets.
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


def astar(free: np.ndarray, start: tuple[int, int], goal: tuple[int, int]):
    """Shortest 4-connected path from ``start`` to ``goal`` over cells where ``free`` is True.

    Returns the list of cells from start to goal (both included), or None if there is none.
    ``start`` itself need not be free (the agent may stand anywhere).
    """
    rows, cols = free.shape
    start, goal = tuple(start), tuple(goal)
    came_from = {start: None}
    cost = {start: 0}
    frontier = [(abs(start[0] - goal[0]) + abs(start[1] - goal[1]), 0, start)]
    while frontier:
        _, g, cell = heapq.heappop(frontier)
        if cell == goal:
            path = [cell]
            while came_from[path[-1]] is not None:
                path.append(came_from[path[-1]])
            return path[::-1]
        if g > cost[cell]:
            continue
        for dr, dc in MOVES:
            nxt = (cell[0] + dr, cell[1] + dc)
            if not (0 <= nxt[0] < rows and 0 <= nxt[1] < cols) or not free[nxt]:
                continue
            if g + 1 < cost.get(nxt, 1 << 30):
                cost[nxt] = g + 1
                came_from[nxt] = cell
                h = abs(nxt[0] - goal[0]) + abs(nxt[1] - goal[1])
                heapq.heappush(frontier, (g + 1 + h, g + 1, nxt))
    return None


def path_length(free: np.ndarray, start, goal) -> int:
    """Steps of the shortest path, or -1 if the goal cannot be reached."""
    path = astar(free, start, goal)
    return -1 if path is None else len(path) - 1


def goal_distances(free: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
    """Steps from every cell to ``goal`` over cells where ``free`` is True, breadth-first from
    the goal; -1 where the goal cannot be reached (and on cells that are not free)."""
    rows, cols = free.shape
    goal = tuple(goal)
    distance = np.full(free.shape, -1, dtype=np.int64)
    distance[goal] = 0
    frontier = deque([goal])
    while frontier:
        cell = frontier.popleft()
        for dr, dc in MOVES:
            nxt = (cell[0] + dr, cell[1] + dc)
            if 0 <= nxt[0] < rows and 0 <= nxt[1] < cols and free[nxt] and distance[nxt] < 0:
                distance[nxt] = distance[cell] + 1
                frontier.append(nxt)
    return distance
