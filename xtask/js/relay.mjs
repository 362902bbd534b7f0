// Waku relay nodes on js-libp2p, run by `traffic` (cargo xtask samples) inside a network
// namespace it captures. Every node is set up as js-waku sets up its relay: gossipsub speaking
// /vac/waku/relay/2.0.0 only, StrictNoSign, message id = sha256(WakuMessage bytes), no
// floodsub fallback, identify and ping; WakuMessages are encoded by @waku/proto.
//
// The ground truth comes from inside the nodes: every TCP socket's own byte counters (Node's
// `net` diagnostics channels), the plaintext the muxer handed to and took from the security
// layer, and every muxed stream's bytes as the node wrote and read them (the muxer's streams
// are wrapped before multistream-select sees them).
//
// Usage: node relay.mjs CONFIG.json REPORT.json

import { AsyncLocalStorage } from 'node:async_hooks'
import { createHash } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { createRequire } from 'node:module'

import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { mplex } from '@libp2p/mplex'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { tls } from '@libp2p/tls'
import { webSockets } from '@libp2p/websockets'
import { WakuMessage } from '@waku/proto'
import { createLibp2p } from 'libp2p'

// Node 20 lacks Promise.withResolvers (Node 22), which libp2p's queues call.
Promise.withResolvers ??= function () {
  let resolve, reject
  const promise = new this((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const RELAY_CODEC = '/vac/waku/relay/2.0.0'
const STEP_TIMEOUT_MS = 20_000

const [configPath, reportPath] = process.argv.slice(2)
const config = JSON.parse(readFileSync(configPath, 'utf8'))

/** The connection being set up by the code running now (a dial or an accepted socket). */
const upgrading = new AsyncLocalStorage()
/** Every TCP socket of the process: addresses and Node's own byte counters. */
const sockets = []
/** Every connection side the muxer taps saw. */
const sides = []

function track (socket, dialer) {
  const rec = { dialer, local: null, remote: null, written: 0, read: 0, closed: false }
  const addresses = () => {
    rec.local = `${socket.localAddress}:${socket.localPort}`
    rec.remote = `${socket.remoteAddress}:${socket.remotePort}`
  }
  if (dialer) socket.once('connect', addresses)
  else addresses()
  socket.once('close', () => {
    rec.written = socket.bytesWritten
    rec.read = socket.bytesRead
    rec.closed = true
  })
  sockets.push(rec)
  return rec
}

diagnostics.subscribe('net.client.socket', ({ socket }) => {
  const ctx = upgrading.getStore()
  const rec = track(socket, true)
  if (ctx != null) ctx.socket = rec
})
diagnostics.subscribe('net.server.socket', ({ socket }) => track(socket, false))

// Dials leave from the dialing node's own address, so every node is a host of its own.
const connect = net.connect
net.connect = net.createConnection = function (...args) {
  const ctx = upgrading.getStore()
  if (ctx?.localAddress != null && typeof args[0] === 'object' && args[0].localAddress == null) {
    args[0] = { ...args[0], localAddress: ctx.localAddress }
  }
  return connect.apply(this, args)
}

const bytesOf = (chunk) => chunk instanceof Uint8Array ? Uint8Array.from(chunk) : chunk.subarray()

/** Wraps an async iterable so that every chunk is also passed to `seen`. */
function tapped (source, seen) {
  return (async function * () {
    for await (const chunk of source) {
      seen(bytesOf(chunk))
      yield chunk
    }
  })()
}

/** Records every byte the node sends and receives on a muxed stream, where the muxer moves them. */
function tapStream (stream, outbound, side) {
  const rec = { outbound, id: stream.id, written: [], read: [] }
  side.streams.push(rec)
  const sendData = stream.sendData.bind(stream)
  stream.sendData = (data, options) => {
    rec.written.push(data.subarray())
    return sendData(data, options)
  }
  const sourcePush = stream.sourcePush.bind(stream)
  stream.sourcePush = (data) => {
    rec.read.push(data.subarray())
    return sourcePush(data)
  }
  return stream
}

/** A muxer factory whose muxers record the plaintext they exchange and every stream's bytes. */
function tapMuxer (factoryOf) {
  return (components) => {
    const factory = factoryOf(components)
    const create = factory.createStreamMuxer.bind(factory)
    factory.createStreamMuxer = (init = {}) => {
      const ctx = upgrading.getStore()
      const side = { ctx, streams: [] }
      ctx.muxer = factory.protocol
      sides.push(side)
      const onIncoming = init.onIncomingStream
      const muxer = create({
        ...init,
        onIncomingStream: (stream) => onIncoming?.(tapStream(stream, false, side))
      })
      const newStream = muxer.newStream.bind(muxer)
      muxer.newStream = (...args) => {
        const s = newStream(...args)
        return s instanceof Promise ? s.then((x) => tapStream(x, true, side)) : tapStream(s, true, side)
      }
      return muxer
    }
    return factory
  }
}

/** A connection encrypter whose secured connections count the plaintext they carry. */
function tapEncrypter (encrypterOf) {
  return (components) => {
    const encrypter = encrypterOf(components)
    for (const method of ['secureInbound', 'secureOutbound']) {
      const secure = encrypter[method].bind(encrypter)
      encrypter[method] = async (...args) => {
        const secured = await secure(...args)
        const ctx = upgrading.getStore()
        const conn = secured.conn
        const sink = conn.sink
        const source = conn.source
        Object.assign(ctx, { security: encrypter.protocol, plaintextWritten: 0, plaintextWrites: 0, plaintextRead: 0 })
        conn.sink = (src) => sink(tapped(src, (b) => { ctx.plaintextWritten += b.length; ctx.plaintextWrites++ }))
        conn.source = tapped(source, (b) => { ctx.plaintextRead += b.length })
        return secured
      }
    }
    return encrypter
  }
}

/** A transport whose dials and accepted connections run with their own `upgrading` context. */
function tapTransport (transportOf, localAddress) {
  return (components) => {
    const transport = transportOf(components)
    const dial = transport.dial.bind(transport)
    transport.dial = (ma, options) => {
      const ctx = { dialer: true, localAddress }
      return upgrading.run(ctx, () => dial(ma, options))
    }
    const createListener = transport.createListener.bind(transport)
    transport.createListener = (options) => createListener({
      ...options,
      upgrader: new Proxy(options.upgrader, {
        get (target, prop) {
          if (prop !== 'upgradeInbound') return Reflect.get(target, prop)
          return (maConn, opts) => {
            const ctx = { dialer: false, remoteAddr: maConn.remoteAddr.toString() }
            return upgrading.run(ctx, () => target.upgradeInbound(maConn, opts))
          }
        }
      })
    })
    return transport
  }
}

function sha256 (bytes) {
  return createHash('sha256').update(bytes).digest()
}

/** Deterministic filler bytes (xorshift64), so that payloads do not compress or repeat. */
function filler (seed, len) {
  let state = (0x9e3779b97f4a7c15n ^ (BigInt(seed + 1) * 0xff51afd7ed558ccdn)) & 0xffffffffffffffffn
  const out = new Uint8Array(len)
  for (let i = 0; i < len; i++) {
    state ^= (state << 13n) & 0xffffffffffffffffn
    state ^= state >> 7n
    state ^= (state << 17n) & 0xffffffffffffffffn
    out[i] = Number(state & 0xffn)
  }
  return out
}

function wakuMessage (planned, index) {
  return WakuMessage.encode({
    payload: filler(index, planned.payload_len),
    contentTopic: planned.content_topic,
    version: 0,
    timestamp: BigInt(Date.now()) * 1_000_000n,
    meta: planned.meta ? filler(index + 1000, 64) : undefined,
    rateLimitProof: planned.rln_proof_len > 0 ? filler(index + 2000, planned.rln_proof_len) : undefined,
    ephemeral: planned.ephemeral ? true : undefined
  })
}

function listenAddr (host) {
  switch (config.transport) {
    case 'ws': return `/ip4/${host}/tcp/0/ws`
    case 'wss': return `/ip4/${host}/tcp/0/tls/ws`
    default: return `/ip4/${host}/tcp/0`
  }
}

/** A throwaway self-signed certificate for the wss listeners, made by openssl for this run only. */
function selfSigned () {
  const pem = execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-subj', '/CN=localhost', '-days', '1', '-keyout', '-', '-out', '-'
  ], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()
  const block = (label) => pem.match(new RegExp(`-----BEGIN ${label}-----[^-]+-----END ${label}-----`))[0]
  return { key: block('PRIVATE KEY'), cert: block('CERTIFICATE') }
}

/**
 * The transport of the nodes. For wss the TLS client runs over a socket of its own (`net.connect`),
 * so that the socket's counters are the bytes on the wire, as the listeners' sockets are.
 */
function transportOf () {
  switch (config.transport) {
    case 'ws': return webSockets()
    case 'wss': return webSockets({
      https: certificate,
      websocket: {
        rejectUnauthorized: false,
        createConnection: (opts) => tlsConnect({
          ...opts,
          socket: net.connect({ host: opts.host, port: opts.port })
        })
      }
    })
    default: return tcp()
  }
}

const certificate = config.transport === 'wss' ? selfSigned() : null

async function makeNode (index) {
  const host = config.hosts[index]
  const transport = transportOf()
  const node = await createLibp2p({
    start: false,
    addresses: { listen: [listenAddr(host)] },
    transports: [tapTransport(transport, host)],
    connectionEncrypters: [tapEncrypter(config.security === 'tls' ? tls() : noise())],
    streamMuxers: [tapMuxer(config.muxer === 'yamux' ? yamux() : mplex())],
    connectionGater: { denyDialMultiaddr: () => false },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictNoSign',
        fallbackToFloodsub: false,
        emitSelf: false,
        allowPublishToZeroTopicPeers: false,
        floodPublish: config.flood_publish,
        D: config.mesh.d,
        Dlo: config.mesh.d_low,
        Dhi: config.mesh.d_high,
        heartbeatInterval: config.heartbeat_ms,
        msgIdFn: (msg) => sha256(msg.data),
        fastMsgIdFn: (msg) => sha256(msg.data).toString('hex')
      })
    }
  })
  node.services.pubsub.multicodecs = [RELAY_CODEC]
  await node.start()
  return node
}

function within (what, promise) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), STEP_TIMEOUT_MS)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

async function until (what, done) {
  await within(what, (async () => {
    while (!done()) await new Promise((resolve) => setTimeout(resolve, 20))
  })())
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function main () {
  const count = config.hosts.length
  const nodes = []
  for (let i = 0; i < count; i++) nodes.push(await makeNode(i))
  const name = (i) => `node${i}`
  const topics = config.topics
  const counts = nodes.map(() => Object.fromEntries(topics.map((t) => [t, {
    published: 0, published_bytes: 0, received: 0, received_bytes: 0
  }])))
  const got = nodes.map(() => new Set())
  nodes.forEach((node, i) => {
    node.services.pubsub.addEventListener('gossipsub:message', ({ detail }) => {
      const id = sha256(detail.msg.data).toString('hex')
      if (got[i].has(id)) return
      got[i].add(id)
      const c = counts[i][detail.msg.topic]
      c.received++
      c.received_bytes += detail.msg.data.length
    })
    for (const t of topics) node.services.pubsub.subscribe(t)
  })

  const early = config.late_joiner ? count - 1 : count
  const dialTo = (i) => nodes[i].getMultiaddrs()[0]
  for (const [from, to] of config.links) {
    if (from < early && to < early) await nodes[from].dial(dialTo(to))
  }
  await until('the gossipsub meshes', () => nodes.slice(0, early).every((n) =>
    topics.every((t) => n.services.pubsub.getMeshPeers(t).length >= config.mesh.d_low)))

  const messages = []
  for (const [index, planned] of config.plan.entries()) {
    const publisher = planned.publisher % early
    const data = wakuMessage(planned, index)
    const id = sha256(data).toString('hex')
    await nodes[publisher].services.pubsub.publish(planned.pubsub_topic, data)
    got[publisher].add(id)
    const c = counts[publisher][planned.pubsub_topic]
    c.published++
    c.published_bytes += data.length
    await until('a message to reach every node', () => got.slice(0, early).every((s) => s.has(id)))
    messages.push({
      publisher: name(publisher),
      pubsub_topic: planned.pubsub_topic,
      content_topic: planned.content_topic,
      payload_bytes: planned.payload_len,
      waku_message_bytes: data.length,
      message_id: id
    })
    if (config.gap_ms > 0) await sleep(config.gap_ms)
  }
  if (config.late_joiner) {
    const late = count - 1
    for (const [from, to] of config.links) {
      if (from === late) await nodes[late].dial(dialTo(to))
      if (to === late) await nodes[from].dial(dialTo(late))
    }
    await until('the late joiner to get every message through IHAVE/IWANT',
      () => messages.every((m) => got[late].has(m.message_id)))
  }
  if (config.leave != null) nodes[0].services.pubsub.unsubscribe(config.leave)
  await sleep(config.linger_ms)

  const peers = nodes.map((n) => n.peerId.toString())
  const listen = nodes.map((n) => {
    const m = n.getMultiaddrs()[0].toString().match(/\/ip4\/([^/]+)\/tcp\/(\d+)/)
    return `${m[1]}:${m[2]}`
  })
  for (const node of nodes) await node.stop()
  await until('every socket to close', () => sockets.every((s) => s.closed))

  const report = {
    versions: versions(),
    nodes: nodes.map((_n, i) => ({ name: name(i), peer_id: peers[i], listen: listen[i] })),
    sockets,
    sides: sides.map((side) => {
      const ctx = side.ctx
      const socket = ctx.dialer
        ? ctx.socket
        : sockets.find((s) => !s.dialer && ctx.remoteAddr.includes(`/ip4/${s.remote.replace(':', '/tcp/')}`))
      if (socket == null) throw new Error(`no socket for a connection side (${JSON.stringify(ctx.remoteAddr)})`)
      return {
        node: config.hosts.indexOf(socket.local.split(':')[0]),
        dialer: ctx.dialer,
        local: socket.local,
        remote: socket.remote,
        security: ctx.security,
        muxer: ctx.muxer,
        bytes_written: socket.written,
        bytes_read: socket.read,
        plaintext_written: ctx.plaintextWritten,
        plaintext_writes: ctx.plaintextWrites,
        plaintext_read: ctx.plaintextRead,
        streams: side.streams.map((s) => ({
          outbound: s.outbound,
          id: s.id,
          written: Buffer.concat(s.written).toString('base64'),
          read: Buffer.concat(s.read).toString('base64')
        }))
      }
    }),
    topics: counts.flatMap((byTopic, i) => Object.entries(byTopic).map(([t, c]) => ({
      node: name(i), pubsub_topic: t, ...c
    }))),
    messages: messages.map((m) => ({
      ...m,
      received_by: got.filter((s, i) => s.has(m.message_id) && name(i) !== m.publisher).length
    }))
  }
  writeFileSync(reportPath, JSON.stringify(report))
}

/** The versions of the packages that made the traffic, as installed. */
function versions () {
  const require = createRequire(import.meta.url)
  const out = { node: process.version }
  for (const pkg of Object.keys(JSON.parse(readFileSync(new URL('./package.json', import.meta.url))).dependencies)) {
    const dir = require.resolve.paths(pkg)[0]
    out[pkg] = JSON.parse(readFileSync(`${dir}/${pkg}/package.json`, 'utf8')).version
  }
  return out
}

main().then(() => process.exit(0), (err) => {
  console.error(err)
  process.exit(1)
})
