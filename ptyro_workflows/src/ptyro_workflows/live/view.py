"""The live web view: a Bokeh server application (bound to 127.0.0.1 unless asked otherwise)
showing the virtual images, centre of mass, DPC, the live direct methods' phases (iCoM, SSB) and
the current reconstruction's phase, updated
twice a second, with the counters (received / processed / dropped / queued), the frame rate and
the reconstruction's loss."""

import asyncio
import os
import threading
from typing import Any

import numpy as np

__all__ = ["serve", "LiveServer"]

PANELS = ("bf", "adf", "com_x", "com_y", "dpc_x", "icom_phase", "ssb_phase", "tcbf_phase", "phase")
OPTIONAL = ("icom_phase", "ssb_phase", "tcbf_phase", "phase")  # shown only when the session computes them
TITLES = {"bf": "virtual BF", "adf": "virtual ADF", "com_x": "CoM x (mrad)", "com_y": "CoM y (mrad)", "dpc_x": "DPC x",
          "icom_phase": "live iCoM phase (rad)", "ssb_phase": "live SSB phase (rad)", "tcbf_phase": "live tilt-corrected BF phase (rad)", "phase": "ptychography phase (rad)"}  # fmt: skip


def _stats_html(s: dict[str, Any]) -> str:
    loss = f"{s['loss']:.4g} (pass {s['passes']}, {s['frames_in_reconstruction']} frames)" if "loss" in s else "–"
    rows = [
        ("state", s["state"]), ("received", f"{s['received']} / {s['expected'] or '?'}"), ("processed", s["processed"]),
        ("dropped", s["dropped"]), ("spilled", f"{s['spilled']} ({s['spill_mb']:.0f} MiB on disk)"), ("rejected", s["rejected"]),
        ("queued", f"{s['queued']} / {s['buffer']} in memory"),
        ("frame rate", f"{s['fps_received']:.0f} /s received, {s['fps_processed']:.0f} /s processed"), ("loss", loss),
    ]  # fmt: skip
    return (
        "<table id='ptyro-stats'>"
        + "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td class='{k.replace(' ', '-')}'>{v}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _make_app(session: Any) -> Any:
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.layouts import column, gridplot
    from bokeh.models import ColumnDataSource
    from bokeh.models.widgets import Div
    from bokeh.plotting import figure

    def modify(doc: Any) -> None:
        stats = Div(text=_stats_html(session.stats()), name="stats", width=900)
        sources, figs = {}, []
        for name in PANELS:
            src = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)], "x": [0], "y": [0], "dw": [1], "dh": [1]}, name=f"src_{name}")
            f = figure(title=TITLES[name], width=240, height=240, match_aspect=True, tools="pan,wheel_zoom,reset,hover", name=f"fig_{name}")
            f.image(image="image", x="x", y="y", dw="dw", dh="dh", source=src, palette="Viridis256" if name.endswith("phase") else "Greys256")
            f.axis.visible = False
            f.visible = name not in OPTIONAL  # a method's panel appears with its first image
            sources[name] = src
            figs.append(f)
        shown = dict(zip(PANELS, figs))

        def update() -> None:
            stats.text = _stats_html(session.stats())
            snap = session.snapshot()
            for name, src in sources.items():
                img = snap.get(name)
                if img is None:
                    continue
                shown[name].visible = True
                a = np.asarray(img, np.float32)
                if name not in ("phase", "ssb_phase", "tcbf_phase") and "received" in snap:
                    got = snap["received"] > 0
                    if got.any():  # frames not yet received show as the mean of those received
                        a = np.where(got, a, a[got].mean())
                # Bokeh images are [rows = y, cols = x]; our arrays are (x, y)
                src.data = {"image": [np.ascontiguousarray(a.T)], "x": [0], "y": [0], "dw": [a.shape[0]], "dh": [a.shape[1]]}

        update()
        doc.add_periodic_callback(update, 500)
        doc.title = "ptyro live"
        doc.add_root(column(Div(text="<h2>ptyro live</h2>"), stats, gridplot(list[Any](figs), ncols=4)))

    return Application(FunctionHandler(modify))


class LiveServer:
    """A Bokeh server in a thread of its own; ``url``, ``stop()``."""

    def __init__(self, session: Any, host: str = "127.0.0.1", port: int = 5006) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.host, self.port = host, int(port)
        self._thread = threading.Thread(target=self._run, args=(session,), name="ptyro-live-view", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self, session: Any) -> None:
        # BokehJS from this server, not from a CDN: the view works on an offline microscope PC
        os.environ.setdefault("BOKEH_RESOURCES", "server")
        from bokeh.server.server import Server
        from tornado.ioloop import IOLoop

        try:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = IOLoop.current()
            origins = [f"{self.host}:{self.port}", f"localhost:{self.port}", f"127.0.0.1:{self.port}"]
            self._server = Server({"/": _make_app(session)}, io_loop=self._loop, address=self.host, port=self.port, allow_websocket_origin=origins)
            self._server.start()
            self.port = int(self._server.port or self.port)
        except BaseException as e:  # noqa: BLE001 - a thread or processor reports its failure; the session keeps what it has
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        def _stop() -> None:
            self._server.stop()
            self._loop.stop()

        if self._error is None:
            self._loop.add_callback(_stop)
            self._thread.join(10)


def serve(session: Any, *, host: str = "127.0.0.1", port: int = 5006) -> LiveServer:
    """Serve the live view of ``session`` at http://host:port/ (port 0: any free port)."""
    return LiveServer(session, host=host, port=port)
