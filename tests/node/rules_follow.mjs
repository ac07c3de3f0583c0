// The rules follow the agent (issue 30), driven by the official TypeScript MCP SDK v2 client
// (`@modelcontextprotocol/client`): the same scenario as tests/python/mcp_rules_follow.py, with the same
// summary, for the Rust integration tests (orchestrator/tests/it/mcp_eras.rs).
//
//   node rules_follow.mjs --url URL [--mode legacy|modern] [--token TOKEN] [--client-name NAME]
//
// --mode legacy is the SDK at its defaults (v2 connects with the `initialize` handshake unless told
// otherwise); --mode modern opts into negotiation (`versionNegotiation: { mode: 'auto' }`), which
// probes `server/discover` and speaks 2026-07-28 without a session. Session-free, the agent passes
// back the last workflow handle it was given as the tool argument `conductorio_workflow`, except
// where a step checks that no handle is needed. Prints one JSON summary line on stdout; a transport
// failure exits 1; refusals and protocol errors of calls are recorded for the test to judge.

import { Client, StreamableHTTPClientTransport, ProtocolError } from '@modelcontextprotocol/client';
import { parseArgs } from 'node:util';

const HANDLE_ARGUMENT = 'conductorio_workflow';
const WORKFLOW_META_KEY = 'io.conductorio/workflowId';
const HANDLE_META_KEY = 'io.conductorio/workflowHandle';

const CUSTOMERS = [
    { id: '1', name: 'Ada Lovelace', email: 'ada@example.com' },
    { id: '2', name: 'Alan Turing', email: 'alan@example.com' }
];
const NO_EMAIL = [{ id: '3', name: 'Nobody' }];
const ORDERS = [
    { id: 'o-1', customer_id: 'c-1', amount: 120.5 },
    { id: 'o-2', customer_id: 'c-1', amount: 30 },
    { id: 'o-3', customer_id: 'c-2', amount: 99 }
];
const NOTE = { channel: 'log', recipient: 'ops', subject: 'Report', body: 'what the agent read' };
// Long enough for a person (here: the test) to approve a gated call; progress resets it.
const CALL_TIMEOUT_MS = 120_000;

const texts = result => (result.content ?? []).filter(block => block.type === 'text').map(block => block.text);

class Agent {
    constructor(client, mode) {
        this.client = client;
        this.mode = mode;
        this.handle = null;
        // Every handle the agent was given, to end each workflow it holds at the end.
        this.handles = [];
    }

    learn(handle) {
        if (handle) {
            this.handle = handle;
            if (!this.handles.includes(handle)) this.handles.push(handle);
        }
    }

    async call(name, args, { passHandle = true, onprogress } = {}) {
        const sent = { ...args };
        if (this.mode === 'modern' && passHandle && this.handle) sent[HANDLE_ARGUMENT] = this.handle;
        const options = { timeout: CALL_TIMEOUT_MS, resetTimeoutOnProgress: true };
        if (onprogress) options.onprogress = onprogress;
        let result;
        try {
            result = await this.client.callTool({ name, arguments: sent }, options);
        } catch (error) {
            if (!(error instanceof ProtocolError)) throw error;
            // A protocol error (e.g. an unknown tool) is an outcome for the test to judge, like a refusal.
            return {
                is_error: true,
                protocol_error: { code: error.code, message: error.message },
                text: error.message,
                texts: [],
                structured: null,
                meta: {},
                workflow_id: null,
                handle: null,
                sent_handle: sent[HANDLE_ARGUMENT] ?? null
            };
        }
        const meta = result._meta ?? {};
        const structured = result.structuredContent ?? null;
        let handle = meta[HANDLE_META_KEY] ?? null;
        if (name === 'conductor_start_workflow' && structured && structured.workflow_handle) {
            handle = structured.workflow_handle;
        }
        this.learn(handle);
        return {
            is_error: Boolean(result.isError),
            text: texts(result).join('\n'),
            texts: texts(result),
            structured,
            meta,
            workflow_id: meta[WORKFLOW_META_KEY] ?? null,
            handle,
            sent_handle: sent[HANDLE_ARGUMENT] ?? null,
            protocol_error: null
        };
    }

    async run() {
        const client = this.client;
        const out = { mode: this.mode, protocol_version: client.getNegotiatedProtocolVersion() ?? null };
        const listed = await client.listTools();
        out.tools = Object.fromEntries(listed.tools.map(tool => [tool.name, tool.inputSchema]));

        // 1. A sequence rule satisfied by an earlier call, with no handle passed until the last call.
        {
            const refused = await this.call('process_data', { records: CUSTOMERS, dedupe_by: 'email' });
            const validated = await this.call('validate_data', { records: CUSTOMERS, schema: 'customer' }, { passHandle: false });
            const processed = await this.call('process_data', { records: CUSTOMERS, dedupe_by: 'email' });
            out.sequence = { refused, validated, processed };
        }

        // 2. A conditional rule, in a new ad-hoc workflow.
        const backup = `rules-follow-ts-${this.mode}`;
        {
            const started = await this.call('conductor_start_workflow', {});
            const invalid = await this.call('validate_data', { records: NO_EMAIL, schema: 'customer' });
            const processed = await this.call('process_data', { records: CUSTOMERS, dedupe_by: 'email' });
            const backupArgs = { name: backup, data: CUSTOMERS, overwrite: true };
            const refused = await this.call('create_backup', backupArgs);
            const validated = await this.call('validate_data', { records: CUSTOMERS, schema: 'customer' });
            const backed_up = await this.call('create_backup', backupArgs);
            out.conditional = { started, invalid, processed, refused, validated, backed_up };
        }

        // 3. A template run bound by conductor_start_workflow and driven step by step.
        {
            const started = await this.call('conductor_start_workflow', { template: 'order_summary', input: { orders: ORDERS } });
            const aggregate = { records: ORDERS, aggregate: { group_by: 'customer_id', sum: ['amount'] } };
            const out_of_order = await this.call('process_data', aggregate);
            const steps = [
                await this.call('validate_data', { records: ORDERS, schema: 'order' }),
                await this.call('process_data', aggregate),
                await this.call('send_notification', { channel: 'log', recipient: 'finance', subject: 'Order summary', body: 'totals' })
            ];
            out.template = { started, out_of_order, steps };
        }

        // 4. An approval gate with progress, in a new ad-hoc workflow.
        {
            const started = await this.call('conductor_start_workflow', {});
            const progress = [];
            const restored = await this.call('restore_backup', { name: backup }, { onprogress: p => progress.push(p.message ?? '') });
            out.approval = { started, restored, progress };
        }

        // 5. A flow rule: egress after private (restore_backup) and untrusted reads.
        {
            const untrusted = await this.call('list_notifications', {});
            const egress = await this.call('send_notification', NOTE);
            out.flow = { untrusted, egress };
        }

        // 6. The model starts a new workflow to shed the labels: they follow it.
        {
            const started = await this.call('conductor_start_workflow', {});
            const egress = await this.call('send_notification', NOTE);
            out.laundering = { started, egress };
        }

        // 7. The end: nothing left running.
        const ended = [await this.call('conductor_end_workflow', {})];
        if (this.mode === 'modern') {
            const current = this.handle;
            for (const handle of this.handles) {
                if (handle !== current) {
                    this.handle = handle;
                    ended.push(await this.call('conductor_end_workflow', {}));
                }
            }
        }
        out.ended = ended;
        return out;
    }
}

async function main() {
    const { values } = parseArgs({
        options: {
            url: { type: 'string' },
            mode: { type: 'string', default: 'legacy' },
            token: { type: 'string' },
            'client-name': { type: 'string', default: 'ts-rules-follow' }
        }
    });
    if (!values.url || !['legacy', 'modern'].includes(values.mode)) {
        console.error('usage: node rules_follow.mjs --url URL [--mode legacy|modern] [--token TOKEN] [--client-name NAME]');
        process.exit(2);
    }
    const headers = values.token ? { Authorization: `Bearer ${values.token}` } : {};
    const transport = new StreamableHTTPClientTransport(new URL(values.url), { requestInit: { headers } });
    // The defaults, but for the era under test: v2 speaks the handshake era unless negotiation is on.
    const options = values.mode === 'modern' ? { versionNegotiation: { mode: 'auto' } } : {};
    const client = new Client({ name: values['client-name'], version: '1.0.0' }, options);
    await client.connect(transport);
    const summary = await new Agent(client, values.mode).run();
    // A session-era client ends its session, as the specification says it should (DELETE).
    if (transport.sessionId) await transport.terminateSession();
    await client.close();
    process.stdout.write(`${JSON.stringify(summary)}\n`);
}

main().catch(error => {
    console.error(error);
    process.exit(1);
});
