import FerryConfig
import ISCSIProtocol
import Logging
import NIOCore
import SCSI

/// One TCP connection: it frames the bytes it receives into PDUs, runs the login phase itself and then hands every
/// PDU to its session (on the session's loop). It owns nothing of the session's state.
///
/// Framing is a `NIOSingleStepByteToMessageProcessor` over a ``PDUFrameDecoder``, inside this handler, as
/// postgres-nio's `PostgresChannelHandler` does it: `channelRead` feeds it the bytes, each PDU it decodes goes to
/// the login or the session, and the errors it throws are handled here. A PDU that can be skipped is answered (a
/// Reject, or a Login Response during login) and decoding goes on after it; any other error ends the connection.
final class ConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = PDU

    private enum Phase {
        case login(LoginStateMachine)
        /// The engine decides whether the login may create or join a session.
        case admitting(LoginStateMachine)
        case fullFeature(Session, cid: UInt16)
        case closed
    }

    private let context: TargetContext
    private let portal: Portal
    private let writer: PDUWriter
    /// Frames the received bytes. Login PDUs are held to the default 8192 bytes; the digests and the limit the
    /// login negotiated apply from the first PDU after the final Login Response, with a new decoder.
    private var decoder = NIOSingleStepByteToMessageProcessor(PDUFrameDecoder())
    private var phase: Phase
    private var logger: Logger
    private var loginTimeout: Scheduled<Void>?
    /// Full feature phase: a PDU arrived since the last idle check.
    private var receivedSinceCheck = false
    /// Full feature phase: every `nop_in_interval`, a silent connection is pinged, and closed when
    /// nothing arrives within `nop_in_timeout` of the ping.
    private var idleCheck: RepeatedTask?
    private var pingOutstanding = false
    /// Rejects of PDUs the decoder could not take, which an initiator can provoke one per PDU: their lines are bounded.
    private var rejectionLines = LogThrottle()
    /// The address this connection's login is counted under in ``TargetContext/loginsInProgress``, until it ends.
    private var loginAddress: String?
    /// The session an admitted login joins, until its final response is sent.
    private var admitted: (session: Session, cid: UInt16)?

    init(context: TargetContext, portal: Portal, writer: PDUWriter) {
        self.context = context
        self.portal = portal
        self.writer = writer
        self.logger = context.logger
        self.phase = .login(
            LoginStateMachine(
                configuration: context.loginConfiguration(portal: portal), policy: context,
                initialStatSN: UInt32.random(in: 1...0x7fff_ffff)))
    }

    func channelActive(context: ChannelHandlerContext) {
        if let remote = context.remoteAddress { logger[metadataKey: "peer"] = "\(remote)" }
        let limits = self.context.configuration.limits
        let address = context.remoteAddress?.ipAddress ?? ""
        let decision = self.context.loginsInProgress.withLock {
            $0.connectionAccepted(
                from: address,
                limits: .init(total: limits.maxLoginsInProgress, perAddress: limits.maxLoginsInProgressPerAddress),
                now: .now)
        }
        guard case .begin = decision else {
            if case .refuse(let refusal, log: true, let refusedSilently) = decision {
                logger.warning(
                    "too many logins in progress; closing new connections at once (logged again in a minute at most)",
                    metadata: ["limit": "\(refusal)", "refusedSinceLastLine": "\(refusedSilently)"])
            }
            phase = .closed
            context.close(promise: nil)
            return
        }
        loginAddress = address
        let seconds = limits.loginTimeout
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        loginTimeout = context.eventLoop.scheduleTask(in: .seconds(Int64(seconds))) {
            let (handler, context) = loopBound.value
            guard case .login(var machine) = handler.phase else { return }
            handler.logger.warning("login timed out; closing the connection", metadata: ["seconds": "\(seconds)"])
            handler.perform(machine.loginTimedOut(), machine: machine, context: context)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        while true {
            // Once the connection is closing, the rest of the stream is not read.
            if case .closed = phase { return }
            do {
                try decoder.process(buffer: bytes) { received($0, context: context) }
                return
            } catch let error as ISCSIProtocolError {
                if case .closed = phase { return }
                receivedSinceCheck = true
                protocolError(error, context: context)
                // After a PDU it could skip, the decoder goes on with the bytes it holds: feed it nothing new.
                guard !error.isConnectionFatal else { return }
                bytes = ByteBuffer()
            } catch {
                // Not thrown: the decoder throws ISCSIProtocolError only, and the processor has no buffer limit.
                logger.notice("framing error; closing the connection", metadata: ["error": "\(error)"])
                closeConnection(context: context)
                return
            }
        }
    }

    /// A PDU the decoder took: the login or the session answers it.
    private func received(_ inbound: InboundPDU, context: ChannelHandlerContext) {
        receivedSinceCheck = true
        let pdu = inbound.pdu
        switch phase {
        case .login(var machine):
            let action: LoginAction
            if case .loginRequest(let request) = pdu {
                action = machine.loginRequestReceived(request)
            } else {
                action = machine.unexpectedPDUReceived(initiatorTaskTag: pdu.initiatorTaskTag ?? reservedTag)
            }
            perform(action, machine: machine, context: context)
        case .admitting:
            logger.notice("PDU during session admission; closing the connection", metadata: ["opcode": "\(pdu.opcode)"])
            phase = .closed
            context.close(promise: nil)
        case .fullFeature(let session, let cid):
            session.receive(inbound, on: cid)
        case .closed:
            break
        }
    }

    private func perform(_ action: LoginAction, machine: LoginStateMachine, context: ChannelHandlerContext) {
        switch action {
        case .sendLoginResponse(let response):
            phase = .login(machine)
            context.writeAndFlush(wrapOutboundOut(.loginResponse(response)), promise: nil)
        case .admitSession(let summary):
            phase = .admitting(machine)
            // A refusal (a limit reached) names the initiator: the operator sees whose logins hit the limit.
            logger[metadataKey: "initiator"] = "\(summary.initiatorName)"
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            self.context.admit(summary, channel: context.channel, logger: logger).whenComplete { result in
                let (handler, context) = loopBound.value
                handler.closeIfSentDuringAdmission(context: context)
                guard case .admitting(var machine) = handler.phase else {
                    // The connection ended before the final Login Response: a session created for this login has
                    // no connection, so it would never end by itself.
                    if case .success(let admission) = result, summary.tsih == 0 {
                        handler.context.registry.remove(admission.session)
                        handler.logger.notice("connection lost during login; session discarded")
                    }
                    return
                }
                let next: LoginAction
                switch result {
                case .success(let admission):
                    handler.admitted = (admission.session, summary.cid)
                    next = machine.sessionAdmitted(
                        tsih: admission.session.tsih, expCmdSN: admission.expCmdSN, maxCmdSN: admission.maxCmdSN)
                case .failure(let error as AdmissionError):
                    next = machine.sessionRefused(error.status, reason: error.reason)
                case .failure(let error):
                    next = machine.sessionRefused(.targetError, reason: "\(error)")
                }
                handler.perform(next, machine: machine, context: context)
            }
        case .completeLogin(let response, let negotiated):
            guard let (session, cid) = admitted else {
                phase = .closed
                context.close(promise: nil)
                return
            }
            admitted = nil
            enterFullFeaturePhase(session, cid: cid, response: response, negotiated: negotiated, context: context)
        case .rejectLogin(let response, let reason):
            LoginMetrics.failed(statusClass: response.statusClass, statusDetail: response.statusDetail)
            logger.notice(
                "login failed",
                metadata: [
                    "reason": "\(reason)",
                    "status": "0x\(String(response.statusClass, radix: 16))\(String(format: "%02x", response.statusDetail))",
                ])
            phase = .closed
            context.writeAndFlush(wrapOutboundOut(.loginResponse(response))).whenComplete { _ in
                context.close(promise: nil)
            }
        case .closeConnection:
            phase = .closed
            context.close(promise: nil)
        }
    }

    private func enterFullFeaturePhase(
        _ session: Session, cid: UInt16, response: LoginResponse, negotiated: NegotiatedParameters,
        context: ChannelHandlerContext
    ) {
        loginTimeout?.cancel()
        loginEnded()
        logger = session.logger
        logger[metadataKey: "cid"] = "\(cid)"
        // The final Login Response goes out without digests; everything after it uses them.
        context.writeAndFlush(wrapOutboundOut(.loginResponse(response)), promise: nil)
        let header = negotiated.headerDigest == .crc32c
        let data = negotiated.dataDigest == .crc32c
        writer.enableDigests(header: header, data: data)
        // The decoder holds no bytes here (see closeIfSentDuringAdmission): the new one starts at a PDU boundary.
        assert(decoder.unprocessedBytes == 0, "bytes left from the login")
        decoder = NIOSingleStepByteToMessageProcessor(
            PDUFrameDecoder(
                maxRecvDataSegmentLength: negotiated.targetMaxRecvDataSegmentLength, headerDigest: header,
                dataDigest: data))
        phase = .fullFeature(session, cid: cid)
        startIdleCheck(session, cid: cid, context: context)
        let channel = context.channel
        let statSN = response.sequence.statSN &+ 1
        session.execute { $0.addConnection(cid, channel: channel, statSN: statSN, negotiated: negotiated) }
        logger.info(
            "logged in",
            metadata: [
                "sessionType": "\(negotiated.sessionType)", "headerDigest": "\(negotiated.headerDigest)",
                "dataDigest": "\(negotiated.dataDigest)",
                "initiatorMaxRecvDataSegmentLength": "\(negotiated.initiatorMaxRecvDataSegmentLength)",
                "maxBurstLength": "\(negotiated.maxBurstLength)", "immediateData": "\(negotiated.immediateData)",
                "initialR2T": "\(negotiated.initialR2T)",
            ])
    }

    /// Pings a connection that has said nothing for `nop_in_interval` seconds, and closes it when
    /// nothing, not even the NOP-Out answer, arrives within `nop_in_timeout` seconds: a dead or
    /// stalled initiator must not keep its session (and its place under `max_sessions`) for ever.
    private func startIdleCheck(_ session: Session, cid: UInt16, context: ChannelHandlerContext) {
        let limits = self.context.configuration.limits
        let interval = TimeAmount.seconds(Int64(limits.nopInInterval))
        let timeout = TimeAmount.seconds(Int64(limits.nopInTimeout))
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        receivedSinceCheck = false
        idleCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = loopBound.value
            guard case .fullFeature = handler.phase, !handler.pingOutstanding else { return }
            if handler.receivedSinceCheck {
                handler.receivedSinceCheck = false
                return
            }
            handler.pingOutstanding = true
            session.execute { $0.ping(cid) }
            context.eventLoop.scheduleTask(in: timeout) {
                let (handler, context) = loopBound.value
                handler.pingOutstanding = false
                guard case .fullFeature = handler.phase, !handler.receivedSinceCheck else { return }
                handler.logger.warning(
                    "no answer to NOP-In; closing the connection",
                    metadata: ["nopInInterval": "\(limits.nopInInterval)", "nopInTimeout": "\(limits.nopInTimeout)"])
                handler.closeConnection(context: context)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Once the connection is closing, later errors are not news.
        if case .closed = phase { return }
        logger.notice("connection error; closing", metadata: ["error": "\(error)"])
        closeConnection(context: context)
    }

    /// The admission of the session has ended. The initiator sends nothing between its final Login Request and the
    /// final Login Response: a complete PDU that arrives meanwhile closes the connection (``received(_:context:)``),
    /// and part of one, still in the decoder, is found here. Such bytes were sent before the initiator could know
    /// that the login completed, and would be framed with the digests and the limit of full feature phase: the
    /// connection closes, as postgres-nio closes one that sent bytes ahead of its TLS handshake.
    private func closeIfSentDuringAdmission(context: ChannelHandlerContext) {
        guard case .admitting = phase, decoder.unprocessedBytes > 0 else { return }
        logger.notice(
            "bytes received during session admission; closing the connection",
            metadata: ["bytes": "\(decoder.unprocessedBytes)"])
        phase = .closed
        context.close(promise: nil)
    }

    /// A PDU the decoder could not take. During login the login state machine answers it (a malformed
    /// Login Request gets status 0x0200); recoverable ones in full feature phase get a Reject
    /// (RFC 7143 §11.17); the others end the connection (ERL 0).
    private func protocolError(_ error: ISCSIProtocolError, context: ChannelHandlerContext) {
        if case .login(var machine) = phase {
            // A malformed Login Request gets a Login Response with an initiator error before the close.
            let action = machine.undecodablePDUReceived(error)
            if case .closeConnection = action {
                logger.notice("protocol error during login; closing the connection", metadata: ["error": "\(error)"])
            }
            return perform(action, machine: machine, context: context)
        }
        guard let reason = error.rejectReason, let header = error.rejectedHeader,
            case .fullFeature(let session, let cid) = phase
        else {
            // > RFC 7143 §7.8 / §6.7: at ERL 0 a header digest error or a framing error ends
            // > the connection.
            logger.notice("protocol error; closing the connection", metadata: ["error": "\(error)"])
            closeConnection(context: context)
            return
        }
        guard error.isConnectionFatal else {
            let (log, suppressed) = rejectionLines.admit()
            if log {
                logger.notice(
                    "rejecting PDU", metadata: ["error": "\(error)", "reason": "\(reason)", "linesLeftOut": "\(suppressed)"])
            }
            session.execute { $0.reject(reason, header: header, on: cid) }
            return
        }
        // The stream can no longer be framed (a data segment over MaxRecvDataSegmentLength): say why with a
        // Reject carrying the header, then drop the connection.
        logger.notice(
            "protocol error; rejecting the PDU and closing the connection",
            metadata: ["error": "\(error)", "reason": "\(reason)"])
        phase = .closed
        let channel = context.channel
        session.execute { session in
            session.reject(reason, header: header, on: cid)
            session.removeConnection(cid)
            channel.close(mode: .all, promise: nil)
        }
    }

    /// Leaves the session, if the connection has joined one, and closes the channel.
    private func closeConnection(context: ChannelHandlerContext) {
        leaveSession()
        phase = .closed
        context.close(promise: nil)
    }

    /// Takes the connection out of its session: every path that ends a full feature phase connection comes here, or
    /// the session would keep a dead connection and never end.
    private func leaveSession() {
        guard case .fullFeature(let session, let cid) = phase else { return }
        phase = .closed
        session.execute { $0.removeConnection(cid) }
        logger.info("connection closed")
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .fullFeature(let session, let cid) = phase {
            let writable = context.channel.isWritable
            session.execute { $0.writabilityChanged(cid, writable: writable) }
        }
        context.fireChannelWritabilityChanged()
    }

    /// The connection leaves the login phase: its place among the logins in progress is free.
    private func loginEnded() {
        guard let address = loginAddress else { return }
        loginAddress = nil
        context.loginsInProgress.withLock { $0.loginEnded(from: address) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        loginTimeout?.cancel()
        loginEnded()
        idleCheck?.cancel()
        switch phase {
        case .login, .admitting:
            logger.info("connection closed during login")
        case .fullFeature:
            leaveSession()
        case .closed:
            break
        }
        phase = .closed
        context.fireChannelInactive()
    }
}
