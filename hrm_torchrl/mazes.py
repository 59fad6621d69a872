"""The paper's two dynamic mazes (HRM-Agent §2.1) on real NetHack through MiniHack.

NetHack builds each level from a des-file: walls, the goal staircase ``>`` and the start (the hero
arrives on an up staircase), drawn by NetHack's own RNG (``SHUFFLE``), seeded from ``reset(seed)``.
NetHack moves the hero, stops it at walls (a move that takes no game time: MiniHack's -0.01 step
penalty) and ends the episode on the staircase (+1). NetHack cannot change its map during an
episode, so the doors live here: this wrapper keeps each door's state, turns a move into a closed
door into a bump (no NetHack step, the same -0.01) and draws the doors into the observation.

Observation: the 11x11 maze interior as ASCII codes (uint8), see ``CODES``. Actions: 0 north,
1 east, 2 south, 3 west.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np

from hrm_torchrl.astar import MOVES, astar

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # minihack 1.0.2 imports the deprecated pkg_resources
    from minihack import MiniHackNavigation
    from nle import nethack

SIZE = 11
FLOOR, WALL, CLOSED_DOOR, OPEN_DOOR, AGENT, GOAL = (ord(c) for c in ".#+'@>")
CODES = {"floor": FLOOR, "wall": WALL, "closed_door": CLOSED_DOOR, "open_door": OPEN_DOOR,
         "agent": AGENT, "goal": GOAL}
BUMP_PENALTY = -0.01  # MiniHack's step penalty for a move that takes no game time
# NetHack's compass actions in our order: north, east, south, west.
NETHACK_MOVES = (nethack.CompassDirection.N, nethack.CompassDirection.E,
                 nethack.CompassDirection.S, nethack.CompassDirection.W)
COLORS = {FLOOR: (235, 235, 225), WALL: (60, 60, 70), CLOSED_DOOR: (200, 40, 40),
           OPEN_DOOR: (120, 200, 120), AGENT: (40, 90, 220), GOAL: (240, 180, 30)}


def _des_place_list(cells) -> str:
    # des-file coordinates are (x, y) = (column, row) in the MAP, whose border wall is row/col 0.
    return "{ " + ",".join(f"({c + 1},{r + 1})" for r, c in cells) + " }"


def _des_file(interior: list[str], places: str, extra: str = "") -> str:
    border = "-" * (SIZE + 2)
    rows = [border] + ["|" + row + "|" for row in interior] + [border]
    return "\n".join([
        'MAZE: "mylevel", \' \'',
        "FLAGS: premapped",
        "INIT_MAP: solidfill,' '",
        "GEOMETRY:center,center",
        "MAP",
        *rows,
        "ENDMAP",
        f"REGION:(0,0,{SIZE + 1},{SIZE + 1}),lit,\"ordinary\"",
        f"$places = {places}",
        "SHUFFLE: $places",
        "STAIR: $places[0], down",  # the goal
        "STAIR: $places[1], up",  # the hero arrives here: the start
        extra,
    ]) + "\n"


class DoorMaze(gym.Env):
    """Shared machinery of the two mazes: NetHack underneath, doors on top.

    Subclasses give the level's des-file and candidate start/goal cells, and the door rules
    (``_place_doors`` at reset, ``_change_doors`` each step). With ``shortest_path=True``,
    ``info["shortest_path"]`` holds the A* length from the agent to the goal under the current
    doors (-1 when they block every path); it is off by default, since A* on every step costs
    more than NetHack's own step and training never reads it.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, p_change: float, max_steps: int, render_mode: str | None,
                 shortest_path: bool, unknown: dict):
        # The step limit is ours (``max_steps``), not gymnasium's TimeLimit: a bump into a closed
        # door never reaches NetHack, so only this wrapper counts every step.
        if unknown:  # a TypeError, as Python raises: TorchRL's GymEnv retries without frameskip
            raise TypeError(
                f"{type(self).__name__}.__init__() got an "
                + ", ".join(f"unexpected keyword argument {k!r}" for k in sorted(unknown))
                + f"; known: {sorted(self._known_arguments())}"
            )
        if not isinstance(p_change, (int, float, np.number)) or not 0.0 <= float(p_change) <= 1.0:
            raise ValueError(f"{type(self).__name__}: p_change must lie in [0, 1], got {p_change!r}")
        if (isinstance(max_steps, bool) or not isinstance(max_steps, (int, float, np.number))
                or int(max_steps) != max_steps or max_steps < 1):
            raise ValueError(
                f"{type(self).__name__}: max_steps must be a positive integer, got {max_steps}"
            )
        if not isinstance(shortest_path, bool):
            raise ValueError(
                f"{type(self).__name__}: shortest_path must be True or False, got {shortest_path!r}"
            )
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(
                f"{type(self).__name__}: unknown render_mode {render_mode!r}; "
                f"choose one of {self.metadata['render_modes']}"
            )
        self.p_change = float(p_change)
        self.max_steps = int(max_steps)
        self.render_mode = render_mode
        self.shortest_path = shortest_path
        self.finished = True  # no episode until reset()
        self.observation_space = gym.spaces.Box(0, 127, (SIZE, SIZE), np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self._nethack = MiniHackNavigation(
            des_file=self._level_des_file(),
            observation_keys=("chars", "blstats"),
            actions=NETHACK_MOVES,
            max_episode_steps=self.max_steps + 1,  # ours truncates first
        )
        self._origin = None  # screen (row, col) of interior cell (0, 0), found at first reset

    @classmethod
    def _known_arguments(cls):
        import inspect

        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "unknown")]

    # -- subclass hooks ---------------------------------------------------------------------
    def _level_des_file(self) -> str:
        raise NotImplementedError

    def _start_goal_cells(self) -> set[tuple[int, int]]:
        raise NotImplementedError

    def _place_doors(self) -> None:
        raise NotImplementedError

    def _change_doors(self) -> bool:
        raise NotImplementedError

    # -- NetHack ----------------------------------------------------------------------------
    def _agent_from(self, blstats) -> tuple[int, int]:
        x, y = int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])
        return y - self._origin[0], x - self._origin[1]

    def _new_level(self) -> None:
        """Has NetHack draw a level; reads walls, start and goal off its map."""
        core, disp = (int(v) for v in self.np_random.integers(1, 2**31 - 1, size=2))
        self._nethack.seed(core, disp, reseed=False)
        obs, _ = self._nethack.reset()
        chars = obs["chars"]
        if self._origin is None:
            rows, cols = np.nonzero(chars == ord("-"))
            self._origin = (int(rows.min()) + 1, int(cols.min()) + 1)
        r0, c0 = self._origin
        interior = chars[r0 : r0 + SIZE, c0 : c0 + SIZE]
        self.walls = ~np.isin(interior, [ord("."), ord("@"), ord(">"), ord("<")])
        goal = np.argwhere(interior == ord(">"))
        self.goal = tuple(int(v) for v in goal[0])
        self.agent = self._agent_from(obs["blstats"])

    # -- the gymnasium API ------------------------------------------------------------------
    # levels NetHack may draw before reset() gives up: a valid one takes a few (at most ~30 seen)
    MAX_LEVELS = 2_000

    def reset(self, *, seed=None, options=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"{type(self).__name__}: seed must be a non-negative integer, got {seed!r}")
        super().reset(seed=seed)
        for _ in range(self.MAX_LEVELS):
            self._new_level()
            # NetHack sometimes puts the hero elsewhere than on the up staircase (a doorway, say);
            # and a path must exist with every door open. Otherwise NetHack draws a new level.
            places = self._start_goal_cells()
            if self.agent in places and self.goal in places and self.agent != self.goal:
                self._place_doors()
                if astar(~self.walls, self.agent, self.goal) is not None:
                    break
        else:
            raise RuntimeError(f"{type(self).__name__}: no level with a path from start to goal in "
                               f"{self.MAX_LEVELS} draws; its arguments leave too little room")
        self.steps = 0
        self.env_changed = False
        self.finished = False
        return self._observation(), self._info()

    def step(self, action):
        reward, terminated = self._advance(action)
        truncated = not terminated and self.steps >= self.max_steps
        return self._observation(), reward, terminated, truncated, self._info()

    def _advance(self, action) -> tuple[float, bool]:
        """Moves the agent, then lets the doors change. Returns (reward, terminated)."""
        if self.finished:
            raise RuntimeError(f"{type(self).__name__}: step() on a finished episode; call reset() first")
        if isinstance(action, bool) or not (isinstance(action, (int, np.integer)) or (
                np.ndim(action) == 0 and np.issubdtype(np.asarray(action).dtype, np.integer))):
            raise ValueError(f"action must be an integer 0 (north), 1 (east), 2 (south) or 3 "
                             f"(west), got {action!r}")
        action = int(action)
        if not 0 <= action < 4:
            raise ValueError(f"action must be 0 (north), 1 (east), 2 (south) or 3 (west), got {action}")
        dr, dc = MOVES[action]
        target = (self.agent[0] + dr, self.agent[1] + dc)
        if target in self.closed_doors:
            reward, terminated = BUMP_PENALTY, False
        else:
            obs, reward, terminated, _, _ = self._nethack.step(action)
            # NetHack's last frame of an episode holds no map: the hero stands on the goal.
            self.agent = self.goal if terminated else self._agent_from(obs["blstats"])
        self.steps += 1
        self.finished = terminated or self.steps >= self.max_steps
        self.env_changed = False if terminated else self._change_doors()
        return float(reward), bool(terminated)

    @property
    def closed_doors(self) -> list[tuple[int, int]]:
        return [door for door, is_open in self.doors.items() if not is_open]

    def _observation(self) -> np.ndarray:
        grid = np.where(self.walls, WALL, FLOOR).astype(np.uint8)
        for (r, c), is_open in self.doors.items():
            grid[r, c] = OPEN_DOOR if is_open else CLOSED_DOOR
        grid[self.goal] = GOAL
        grid[self.agent] = AGENT
        return grid

    def passable(self) -> np.ndarray:
        """Cells the agent can enter under the current doors."""
        free = ~self.walls
        for door in self.closed_doors:
            free[door] = False
        return free

    def _info(self) -> dict:
        info = {
            "agent_pos": self.agent,
            "goal_pos": self.goal,
            "closed_doors": self.closed_doors,
            "env_changed": self.env_changed,
        }
        if self.shortest_path:
            path = astar(self.passable(), self.agent, self.goal)
            info["shortest_path"] = -1 if path is None else len(path) - 1
        return info

    def render(self):
        if not hasattr(self, "walls"):
            raise RuntimeError(f"{type(self).__name__}: render() before the first reset()")
        grid = self._observation()
        if self.render_mode == "ansi":
            return "\n".join(bytes(row).decode("ascii") for row in grid)
        if self.render_mode == "rgb_array":
            lut = np.zeros((128, 3), np.uint8)
            for code, color in COLORS.items():
                lut[code] = color
            return np.kron(lut[grid], np.ones((16, 16, 1), np.uint8))
        return None

    def close(self):
        self._nethack.close()


class FourRoomsDoors(DoorMaze):
    """Sutton et al.'s four rooms with a door in each doorway, exactly one closed at all times.

    Each step, with probability ``p_change``, the closed door moves to another doorway drawn
    uniformly among those the agent is not standing in: the door layout changes with probability
    ``p_change`` per step. Start and goal are drawn from the room cells (never a doorway).
    """

    DOORWAYS = ((2, 5), (5, 1), (6, 8), (9, 5))

    def __init__(self, p_change: float = 0.05, max_steps: int = 80,
                 render_mode: str | None = None, shortest_path: bool = False, **unknown):
        super().__init__(p_change, max_steps, render_mode, shortest_path, unknown)

    @classmethod
    def layout(cls) -> np.ndarray:
        walls = np.zeros((SIZE, SIZE), bool)
        walls[:, 5] = True
        walls[5, :5] = True
        walls[6, 6:] = True
        for door in cls.DOORWAYS:
            walls[door] = False
        return walls

    @classmethod
    def _start_goal_cells(cls) -> set[tuple[int, int]]:
        walls = cls.layout()
        return {(int(r), int(c)) for r, c in zip(*np.nonzero(~walls))} - set(cls.DOORWAYS)

    def _level_des_file(self) -> str:
        interior = ["".join("|" if w else "." for w in row) for row in self.layout()]
        return _des_file(interior, _des_place_list(sorted(self._start_goal_cells())))

    def _place_doors(self) -> None:
        closed = self.DOORWAYS[self.np_random.integers(len(self.DOORWAYS))]
        self.doors = {door: door != closed for door in self.DOORWAYS}

    def _change_doors(self) -> bool:
        if self.np_random.random() >= self.p_change:
            return False
        choices = [d for d in self.DOORWAYS if d not in self.closed_doors and d != self.agent]
        closed = choices[self.np_random.integers(len(choices))]
        self.doors = {door: door != closed for door in self.DOORWAYS}
        return True


class DynamicMaze(DoorMaze):
    """A regular grid of permanent walls with random walls and random, flickering doors.

    Floor where row and column are both even, pillars where both are odd; the 60 cells between
    them are candidates. NetHack puts ``n_walls`` fixed walls on random candidates; then
    ``n_doors`` doors go on random remaining candidates, each open or closed at random. Each step
    every door independently toggles with probability ``p_change``, except that a door never
    closes on the agent. Start and goal are floor cells (both coordinates even).
    """

    CANDIDATES = tuple((r, c) for r in range(SIZE) for c in range(SIZE) if (r + c) % 2)
    FLOOR_CELLS = tuple((r, c) for r in range(0, SIZE, 2) for c in range(0, SIZE, 2))

    def __init__(self, n_walls: int = 12, n_doors: int = 6, p_change: float = 0.05,
                 max_steps: int = 80, render_mode: str | None = None, shortest_path: bool = False,
                 **unknown):
        for name, value in (("n_walls", n_walls), ("n_doors", n_doors)):
            if int(value) != value or value < 0:
                raise ValueError(f"DynamicMaze: {name} must be a non-negative integer, got {value}")
        if n_walls + n_doors > len(self.CANDIDATES):
            raise ValueError(
                f"DynamicMaze: n_walls + n_doors = {n_walls + n_doors} is more than the "
                f"{len(self.CANDIDATES)} candidate cells"
            )
        self.n_walls, self.n_doors = int(n_walls), int(n_doors)
        super().__init__(p_change, max_steps, render_mode, shortest_path, unknown)

    def _level_des_file(self) -> str:
        interior = ["".join("|" if r % 2 and c % 2 else "." for c in range(SIZE))
                    for r in range(SIZE)]
        walls = "\n".join(
            [f"$walls = {_des_place_list(self.CANDIDATES)}", "SHUFFLE: $walls"]
            + [f"TERRAIN: $walls[{i}], '|'" for i in range(self.n_walls)]
        )
        return _des_file(interior, _des_place_list(self.FLOOR_CELLS), walls)

    @classmethod
    def _start_goal_cells(cls) -> set[tuple[int, int]]:
        return set(cls.FLOOR_CELLS)

    def _place_doors(self) -> None:
        open_candidates = [cell for cell in self.CANDIDATES if not self.walls[cell]]
        chosen = self.np_random.choice(len(open_candidates), self.n_doors, replace=False)
        states = self.np_random.random(self.n_doors) < 0.5
        self.doors = {open_candidates[i]: bool(s) for i, s in zip(chosen, states)}

    def _change_doors(self) -> bool:
        toggles = self.np_random.random(len(self.doors)) < self.p_change
        changed = False
        for (door, is_open), toggle in zip(list(self.doors.items()), toggles):
            if toggle and not (is_open and door == self.agent):
                self.doors[door] = not is_open
                changed = True
        return changed
