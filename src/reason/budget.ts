/**
 * Budget-conditioned reasoning: the thinking budget a request asks for is written into the prompt as a system
 * line, the same text in RL training and at inference, so one adapter serves several budgets.
 */
export const budgetSystemLine = (budget: number): string => `Thinking budget: ${budget} tokens.`;

/** The default buckets RL trains and the server's reasoning_effort maps onto. */
export const DEFAULT_BUDGETS = [32, 64, 128] as const;
