export { BUILTIN_CHAT_TEMPLATES, CHAT_TEMPLATE_CHOICES, ChatTemplateError, chatFormat, createChatFormat, type ChatFormat, type ChatMessage } from './template.js';
export { ChatSession, replyEndIds, type ChatReply, type ChatSessionOptions } from './session.js';
