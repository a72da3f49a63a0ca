import {
  CONTROL_NAMESPACE,
  LamportClock,
  controlReply,
  errorReply,
  isForNode,
  parseControlRequest,
  unknownCommandReply,
} from '../../protocol/pidbox';
import type { JsonValue } from '../../protocol/types';
import type { Logger } from '../log';
import { HANDLERS, ShutdownRequested, type WorkerView } from './commands';
import type { ControlTransport, MailboxMessage } from './transport';

/**
 * This worker process as a Celery node: takes each message of its mailbox (kombu's Node.handle_message), runs
 * the command when it is meant for this node, and replies `{<node>: <result>}` when the client asked for one.
 */
export class RemoteControl {
  readonly clock = new LamportClock();

  constructor(
    private readonly transport: ControlTransport,
    private readonly view: WorkerView,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    await this.transport.start(this.view.hostname, (m) => this.handle(m));
    this.logger.info(`remote control: node ${this.view.hostname} listens on the ${CONTROL_NAMESPACE}.pidbox mailbox`, {
      node: this.view.hostname,
    });
  }

  private handle(m: MailboxMessage): void {
    this.clock.adjust(m.headers.clock);
    // A request the client stopped waiting for (headers.expires, Unix seconds) is dropped, as kombu does.
    const expires = m.headers.expires;
    if (typeof expires === 'number' && expires > 0 && Date.now() / 1000 > expires) return;
    const parsed = parseControlRequest(m.body);
    if (!parsed.ok) {
      this.logger.warn(`remote control: ${parsed.reason}`, { node: this.view.hostname });
      return;
    }
    const req = parsed.request;
    if (!isForNode(req, this.view.hostname)) return;
    let result: JsonValue;
    const handler = HANDLERS[req.method];
    try {
      result = handler ? handler(this.view, req.arguments) : unknownCommandReply(req.method);
    } catch (err) {
      if (err instanceof ShutdownRequested) return; // like Celery: the node goes away without replying
      this.logger.warn(`remote control: ${req.method} failed: ${(err as Error).message}`, { node: this.view.hostname });
      result = errorReply((err as Error).name || 'Error', (err as Error).message);
    }
    this.logger.debug(`remote control: ${req.method}`, { node: this.view.hostname, ticket: req.ticket });
    if (!req.replyTo) return;
    const { body, headers } = controlReply(this.view.hostname, result, req.ticket, this.clock.forward());
    this.transport.reply(req.replyTo.exchange, req.replyTo.routingKey, body, headers).catch((err: Error) => {
      this.logger.warn(`remote control: cannot reply to ${req.method}: ${err.message}`, { node: this.view.hostname });
    });
  }
}
