"""The admin HTTP API (aiohttp), on the node's own event loop.

- ``GET /health``  — 200 ``{"ok": true, ...}`` while the node serves; scripts and load balancers.
- ``GET /status``  — the JSON document of DESIGN.md (node, role, epoch, positions, members, ...),
  in leader mode with the failover facts of the core's ``status()``: ``elections`` (started,
  won, lost), ``leaderless_ms``, ``last_failover_ms``, ``divergent_entries`` (pending) and
  ``divergent_total``, ``candidate``, ``priority`` and a running ``switchover``, beside the
  configuration's ``may_lose_acknowledged_writes``.
- ``GET /metrics`` — Prometheus text exposition (``server.metrics``).
- ``GET /``        — a small dashboard page that polls ``/status``: the node's facts (failover
  facts only where the mode reports them) and, on a leader, one row per follower (state,
  durable position, lag, last answer, re-seeds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from chorusdb.server.node import Node

DASHBOARD_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>ChorusDB</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}
th{color:#666;font-weight:500}.ok{color:#18794e}.bad{color:#b42318}
</style></head>
<body><h1>ChorusDB <span id="node"></span></h1>
<table id="facts"></table>
<h2 id="members-title"></h2>
<table id="members"></table>
<p><a href="/status">/status</a> · <a href="/metrics">/metrics</a> · <a href="/health">/health</a></p>
<script>
async function refresh(){
  const s = await (await fetch('/status')).json();
  document.getElementById('node').textContent = s.node_id + ' (' + s.role + ')';
  const rows = [['cluster', s.cluster_id], ['mode', s.mode], ['role', s.role],
    ['leader', s.leader_id], ['epoch', s.epoch],
    ['position', s.position.epoch + ':' + s.position.index],
    ['committed', s.commit_position.epoch + ':' + s.commit_position.index],
    ['durability', s.durability], ['clients', s.connected_clients],
    ['may lose acknowledged writes', s.may_lose_acknowledged_writes],
    ['elections', s.elections === undefined ? undefined : s.elections.started +
      ' started, ' + s.elections.won + ' won, ' + s.elections.lost + ' lost'],
    ['without a leader', s.leaderless_ms === undefined ? undefined : s.leaderless_ms + ' ms'],
    ['last failover', s.last_failover_ms === undefined ? undefined :
      s.last_failover_ms === null ? 'none yet' : s.last_failover_ms + ' ms'],
    ['divergent entries', s.divergent_entries + (s.divergent_total === undefined ? '' :
      ' pending of ' + s.divergent_total)],
    ['switchover', s.switchover ? 'to ' + s.switchover.target + ', ' + s.switchover.state +
      ' for ' + s.switchover.elapsed_ms + ' ms' : undefined]];
  // Failover facts a mode does not report are left out.
  document.getElementById('facts').innerHTML = rows.filter(r => r[1] !== undefined).map(
    r => '<tr><th>' + r[0] + '</th><td>' + r[1] + '</td></tr>').join('');
  const members = s.members || [];
  document.getElementById('members-title').textContent = members.length ? 'followers' : '';
  document.getElementById('members').innerHTML = !members.length ? '' :
    '<tr><th>member</th><th>state</th><th>durable</th><th>lag entries</th><th>lag ms</th>' +
    '<th>last answer ms ago</th><th>re-seeds</th></tr>' + members.map(m =>
      '<tr><td>' + m.id + '</td><td class="' + (m.state === 'streaming' ? 'ok' : 'bad') + '">' +
      m.state + (m.reason ? ' (' + m.reason + ')' : '') +
      (m.snapshot_chunks ? ' ' + m.snapshot_chunks : '') + '</td><td>' +
      m.durable_position.epoch + ':' + m.durable_position.index + '</td><td>' +
      m.lag_entries + '</td><td>' + m.lag_ms + '</td><td>' +
      (m.last_answer_ms_ago === null ? 'never' : m.last_answer_ms_ago) + '</td><td>' +
      m.reseeds + (m.reseed_reason ? ' (' + m.reseed_reason + ')' : '') + '</td></tr>').join('');
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


class AdminServer:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([
            web.get("/health", self.health),
            web.get("/status", self.status),
            web.get("/metrics", self.metrics),
            web.get("/", self.dashboard),
        ])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        address = self.node.config.admin
        site = web.TCPSite(self.runner, address.host, address.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port actually bound

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "node_id": self.node.config.node_id,
                                  "role": self.node.core.status()["role"]})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.node.status())

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.node.metrics.exposition(self.node.core.status()),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(text=DASHBOARD_HTML, content_type="text/html")
